#!/usr/bin/env bash
# make bench-policies: what the key policies cost the check path, as ratios of interleaved runs
# on one server with the same load generator (bench/loadgen.c), each against a key with none:
#   allowlist   8 networks, the client's the last of them
#   rate limit  1000000/s (a bucket taken at every check, never empty at these rates)
#   grace       the old secret of a key rotated with --grace 1h (its events carry a detail, so
#               SQLite stores each as a row of its own instead of in a packed batch)
#   credits     a key with 10^15 usage credits (one compare-and-swap per check, and the count
#               stored with each audit batch)
# The other policies (--max-key-lifetime, leak reports) are not on the check path.
#   BENCH_SECONDS  seconds per measurement (default 4)
#   BENCH_ROUNDS   interleaved rounds (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${BENCH_SECONDS:-4}
ROUNDS=${BENCH_ROUNDS:-5}
PORT=17511
command -v bc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null; }
swift build -c release --product apikeyd >/dev/null
swift build -c release --product apikey >/dev/null
BIN=$(swift build -c release --show-bin-path)
source bench/lib.sh
build_loadgen

"$BIN/apikeyd" --data-dir "$WORK/data" --port "$PORT" --log-level warning >"$WORK/apikeyd.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT"
apikey() { APIKEY_SERVER="127.0.0.1:$PORT" APIKEY_TOKEN_FILE="$WORK/data/admin.token" "$BIN/apikey" "$@"; }
secret() { sed -n 's/.*"secret" *: *"\([^"]*\)".*/\1/p'; }
OPEN=$(apikey create open -p jobs:read --json | secret)
FENCED=$(apikey create fenced -p jobs:read --json \
    --allow 10.0.0.0/8 --allow 172.16.0.0/12 --allow 192.168.0.0/16 --allow 2001:db8::/32 \
    --allow 198.51.100.0/24 --allow 203.0.113.0/24 --allow fd00::/8 --allow 127.0.0.0/8 | secret)
LIMITED=$(apikey create limited -p jobs:read --rate 1000000/s --json | secret)
METERED=$(apikey create metered -p jobs:read --uses 1000000000000000 --json | secret)
ROTATED_JSON=$(apikey create rotated -p jobs:read --json)
GRACE=$(echo "$ROTATED_JSON" | secret)
ROTATED_ID=$(echo "$ROTATED_JSON" | sed -n 's/.*"id" *: *"\(key_[^"]*\)".*/\1/p')
apikey rotate "$ROTATED_ID" --grace 1h --json >/dev/null
[ -n "$OPEN" ] && [ -n "$FENCED" ] && [ -n "$LIMITED" ] && [ -n "$METERED" ] && [ -n "$GRACE" ] || {
    echo "bench: could not create the keys" >&2; exit 1; }
declare -A KEY=([open]=$OPEN [fenced]=$FENCED [limited]=$LIMITED [metered]=$METERED [grace]=$GRACE)
declare -A LABEL=([fenced]="allowlist (8 networks)" [limited]="rate limit (1000000/s)" [metered]="usage credits"
    [grace]="grace secret")
SIDES="open fenced limited metered grace"

declare -A RPS P99
for round in $(seq 1 "$ROUNDS"); do
    for setting in "50 1" "50 16"; do
        read -r c p <<<"$setting"
        for side in $SIDES; do
            measure "$side" "$PORT" "${KEY[$side]}" "$c" "$p"
        done
    done
done
echo "key policies on the check path — $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores; $ROUNDS interleaved rounds of ${SECONDS_EACH}s, medians"
printf '%-36s | %10s %10s %6s | %9s %9s\n' "setting" "off r/s" "on r/s" "ratio" "off p99" "on p99"
for setting in "50 1" "50 16"; do
    read -r c p <<<"$setting"
    off=$(echo "${RPS[open $c $p]}" | median)
    for side in $SIDES; do
        [ "$side" = open ] && continue
        on=$(echo "${RPS[$side $c $p]}" | median)
        printf '%-36s | %10s %10s %6s | %7sµs %7sµs\n' "${LABEL[$side]}, c=$c P=$p" "$off" "$on" "$(ratio "$on" "$off")" \
            "$(echo "${P99[open $c $p]}" | median)" "$(echo "${P99[$side $c $p]}" | median)"
    done
done
