#!/usr/bin/env bash
# Durable CreateKey/s on PostgreSQL of two builds, interleaved: each build's apikeyd on its own
# database of one throwaway cluster (fsync on), `apikeyd-bench load -c C --rpc create` against
# each in turn, ROUNDS rounds of SECONDS. For comparing a change with the build before it:
#   bench/create-ab.sh DIR_A DIR_B [ROUNDS=5] [SECONDS=4] [C=8]
# where each DIR holds an apikeyd (and DIR_A an apikeyd-bench), e.g. copies of .build/release.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${APIKEYS_TEST_DATABASE_URL:-}" ]; then
    APIKEYS_PG_FSYNC=on exec Tests/postgres/with-cluster.sh "$PWD/bench/create-ab.sh" "$@"
fi
A=$(cd "$1" && pwd); B=$(cd "$2" && pwd); ROUNDS=${3:-5}; SECS=${4:-4}; C=${5:-8}
source bench/lib.sh
base=${APIKEYS_TEST_DATABASE_URL%/*}
"$APIKEYS_TEST_PG_BIN/psql" -X -q -d "$APIKEYS_TEST_DATABASE_URL" -c "CREATE DATABASE ab_a" -c "CREATE DATABASE ab_b"
"$A/apikeyd" --data-dir "$WORK/a" --port 17701 --log-level warning --database-url "$base/ab_a" >"$WORK/a.log" 2>&1 &
PIDS+=($!)
"$B/apikeyd" --data-dir "$WORK/b" --port 17702 --log-level warning --database-url "$base/ab_b" >"$WORK/b.log" 2>&1 &
PIDS+=($!)
wait_port 17701; wait_port 17702
for round in $(seq 1 "$ROUNDS"); do
    for side in a b; do
        port=17701; [ "$side" = b ] && port=17702
        line=$("$A/apikeyd-bench" load --port "$port" --token-file "$WORK/$side/admin.token" -c "$C" -P 1 -d "$SECS" --machine --rpc create)
        echo "$side round $round: creates/s $(echo "$line" | field rps), p99 $(echo "$line" | field p99_us) µs, errors $(echo "$line" | field errors)"
    done
done
