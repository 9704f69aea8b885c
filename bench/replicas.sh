#!/usr/bin/env bash
# make bench-replicas: apikeyd on PostgreSQL (a throwaway cluster with fsync on), as figures and
# ratios of interleaved runs against the SQLite store (same load generator, same settings):
# revocation propagation between replicas, checks/s, durable CreateKey/s at c=8, three replicas auditing
# every check into one database (nothing lost or repeated), start-up at 1M keys.
#   BENCH_SECONDS  seconds per measurement (default 5)
#   BENCH_ROUNDS   rounds (default 3)
#   BENCH_REVOCATIONS  revocations timed (default 1000)
#   BENCH_KEYS     keys for the start-up measurement (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${APIKEYS_TEST_DATABASE_URL:-}" ]; then
    APIKEYS_PG_FSYNC=on exec Tests/postgres/with-cluster.sh "$0" "$@"
fi
SECONDS_EACH=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
REVOCATIONS=${BENCH_REVOCATIONS:-1000}
KEYS=${BENCH_KEYS:-1000000}
command -v bc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null; }
swift build -c release --product apikeyd >/dev/null 2>&1 || { echo "bench: build failed (swift build -c release)" >&2; exit 1; }
swift build -c release --product apikeyd-bench >/dev/null 2>&1 || { echo "bench: build failed" >&2; exit 1; }
BIN=$(swift build -c release --show-bin-path)
PG_BIN=$APIKEYS_TEST_PG_BIN

source bench/lib.sh
newdb() {  # newdb NAME: a new database on the cluster; prints its URL
    local base=${APIKEYS_TEST_DATABASE_URL%/*}
    "$PG_BIN/createdb" -d "$APIKEYS_TEST_DATABASE_URL" "$1" 2>/dev/null || "$PG_BIN/psql" -X -q -d "$APIKEYS_TEST_DATABASE_URL" -c "CREATE DATABASE $1"
    echo "$base/$1"
}
start() {  # start NAME PORT ARGS...: an apikeyd on PORT with its own data directory
    local name=$1 port=$2; shift 2
    "$BIN/apikeyd" --data-dir "$WORK/$name" --port "$port" --http-port $((port + 100)) --log-level warning "$@" \
        >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
}
drained() {  # drained PORT: waits until the audit queue of the apikeyd on PORT is empty (a backlog of
             # check events still going into the database would slow the next measurement)
    local depth
    for _ in $(seq 1 600); do
        depth=$(curl -s "http://127.0.0.1:$(($1 + 100))/metrics" | awk '/^apikeyd_audit_queue_depth/ {print $2}' || true)
        [ "${depth%.*}" = 0 ] && return 0
        sleep 0.1
    done
    echo "bench: the audit queue of :$1 did not drain in 60 s" >&2
}

DB=$(newdb bench)
start pg-a 17601 --database-url "$DB"
start pg-b 17602 --database-url "$DB"
start sqlite 17603
# With aggregated audit (a summary row per key and minute instead of a row per check), checks write
# almost nothing: the comparison of the stores themselves.
start pg-agg 17606 --database-url "$DB" --audit-mode aggregated
start sqlite-agg 17607 --audit-mode aggregated
TOKEN_PG="$WORK/pg-a/admin.token"

echo "apikeyd on PostgreSQL — $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), fsync on"
"$BIN/apikeyd-bench" propagation --writer 127.0.0.1:17601 --observer 127.0.0.1:17602 --token-file "$TOKEN_PG" \
    --rounds "$REVOCATIONS"

load() {  # load PORT TOKEN-FILE C P [ARGS]: prints "rps p99_us"
    local line
    line=$("$BIN/apikeyd-bench" load --port "$1" --token-file "$2" -c "$3" -P "$4" -d "$SECONDS_EACH" --machine "${@:5}")
    echo "$(echo "$line" | field rps) $(echo "$line" | field p99_us)"
}
declare -A RPS P99
measure() {
    local rps p99
    read -r rps p99 <<<"$("${@:2}")"
    RPS[$1]+="$rps "; P99[$1]+="$p99 "
}
for round in $(seq 1 "$ROUNDS"); do
    for setting in "50 1" "50 16"; do
        read -r c p <<<"$setting"
        drained 17603; measure "sqlite $c $p" load 17603 "$WORK/sqlite/admin.token" "$c" "$p"
        drained 17601; measure "pg $c $p" load 17601 "$TOKEN_PG" "$c" "$p"
        measure "sqlite-agg $c $p" load 17607 "$WORK/sqlite-agg/admin.token" "$c" "$p"
        measure "pg-agg $c $p" load 17606 "$TOKEN_PG" "$c" "$p"
    done
    drained 17603; measure "sqlite create" load 17603 "$WORK/sqlite/admin.token" 8 1 --rpc create
    drained 17601; measure "pg create" load 17601 "$TOKEN_PG" 8 1 --rpc create
done
printf "%-40s | %10s %10s %6s | %9s %9s\n" "comparison (${ROUNDS} rounds of ${SECONDS_EACH}s, medians)" "SQLite r/s" "PG r/s" "ratio" "SQLite p99" "PG p99"
row() {
    local br wr bp wp
    br=$(echo "${RPS[$2]}" | median); wr=$(echo "${RPS[$3]}" | median)
    bp=$(echo "${P99[$2]}" | median); wp=$(echo "${P99[$3]}" | median)
    printf "%-40s | %10s %10s %6s | %7sµs %7sµs\n" "$1" "$br" "$wr" "$(ratio "$wr" "$br")" "$bp" "$wp"
}
row "Check, aggregated audit, c=50 P=1" "sqlite-agg 50 1" "pg-agg 50 1"
row "Check, aggregated audit, c=50 P=16" "sqlite-agg 50 16" "pg-agg 50 16"
row "Check, full audit, c=50 P=1" "sqlite 50 1" "pg 50 1"
row "Check, full audit, c=50 P=16" "sqlite 50 16" "pg 50 16"
row "durable CreateKey, c=8" "sqlite create" "pg create"
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()
stored_checks() {  # stored_checks URL: api.request events stored (batches, and rows of earlier versions)
    "$PG_BIN/psql" -X -A -t -d "$1" -c "SELECT (SELECT coalesce(sum(count), 0) FROM api_request_batches)
        + (SELECT count(*) FROM audit_events WHERE action = 'api.request')"
}
echo "api.request events in PostgreSQL after the runs: $(stored_checks "$DB")"

# Three replicas on one database under full audit, checking at once (their batches overlap): every
# check answered is one event stored, none lost or repeated; the chain verifies; a key's events page
# through whole, newest first.
swift build -c release --product apikey >/dev/null 2>&1 || { echo "bench: build failed (apikey)" >&2; exit 1; }
FLEET=$(newdb fleet)
for i in 1 2 3; do start "fleet$i" $((17610 + i)) --database-url "$FLEET"; done
LOADS=()
for i in 1 2 3; do
    "$BIN/apikeyd-bench" load --port $((17610 + i)) --token-file "$WORK/fleet1/admin.token" -c 16 -P 4 \
        -d "$SECONDS_EACH" --warmup 0 --machine >"$WORK/fleet$i.load" &
    LOADS+=($!)
done
wait "${LOADS[@]}"
answered=0
declare -A CHECKS
for i in 1 2 3; do
    drained $((17610 + i))
    checks=$(curl -s "http://127.0.0.1:$((17710 + i))/metrics" | awk '/^apikeyd_checks_total/ {n += $2} END {printf "%d", n}')
    CHECKS[$i]=$checks
    answered=$((answered + checks))
done
stored=$(stored_checks "$FLEET")
verify=$("$BIN/apikey" audit verify --server 127.0.0.1:17611 --token-file "$WORK/fleet1/admin.token" 2>&1 | tail -1)
# The first key a load made, read through another replica: each load checks only its own key, so
# the key's events are the checks of one replica, the one numbered in their seqs (bits 12-19; the
# replicas took numbers 1, 2, 3 as they started).
key=$("$PG_BIN/psql" -X -A -t -d "$FLEET" -c "SELECT id FROM keys ORDER BY pk LIMIT 1")
read -r paged order replica < <("$BIN/apikey" audit --server 127.0.0.1:17612 --token-file "$WORK/fleet1/admin.token" \
    --key "$key" --action api.request --limit 100000000 --json | python3 -c '
import json, sys
seqs = [event["seq"] for event in json.load(sys.stdin)]
print(len(seqs), "newest-first" if all(a > b for a, b in zip(seqs, seqs[1:])) else "OUT-OF-ORDER", seqs[0] >> 12 & 0xFF)')
echo "three replicas, full audit, checking at once: $answered checks answered, $stored events stored" \
    "($([ "$answered" = "$stored" ] && echo "equal" || echo "DIFFERENT")); chain: ${verify%%, from link*};" \
    "one key's events paged through: $paged, $order; its replica ($replica) answered ${CHECKS[$replica]:-?}" \
    "($([ "$paged" = "${CHECKS[$replica]:-}" ] && echo "equal" || echo "DIFFERENT"))"
for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

# Start-up of a replica on a database of $KEYS keys (inserted by SQL: distinct hashes, 3 permissions).
BIG=$(newdb bigbench)
start seed 17604 --database-url "$BIG"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
"$PG_BIN/psql" -X -q -d "$BIG" -c "INSERT INTO keys (id, name, secret_hash, hint, permissions, enabled, created_at_ms, updated_at_ms)
    SELECT 'key_' || i, 'seed ' || i, sha256(i::text::bytea), 'dbm_…' || i, 'jobs:read jobs:write history:read', true, 0, 0
    FROM generate_series(1, $KEYS) AS i"
t0=$(date +%s%N)
"$BIN/apikeyd" --data-dir "$WORK/big" --port 17605 --database-url "$BIG" --log-level warning >"$WORK/big.log" 2>&1 &
PIDS+=($!)
wait_port 17605
t1=$(date +%s%N)
rss=$(awk '/VmRSS/ {print $2}' "/proc/${PIDS[-1]}/status")
printf "start-up of a replica at %d keys: %.2f s to listening, RSS %d MB\n" "$KEYS" "$(echo "($t1 - $t0) / 1000000000" | bc -l)" $((rss / 1024))
