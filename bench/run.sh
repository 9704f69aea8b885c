#!/usr/bin/env bash
# make bench: apikeyd's Authorize against Redis GET on this machine, in one run, as ratios.
#   BENCH_SECONDS  seconds per measurement (default 5)
#   BENCH_KEYS     keys for the large-index measurement (default 1000000)
#   BENCH_AUDIT    audit mode of the server for the Check runs: full (default) or aggregated
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${BENCH_SECONDS:-5}
BIG=${BENCH_KEYS:-1000000}
AUDIT=${BENCH_AUDIT:-full}
REDIS_PORT=16379
APIKEYD_PORT=17411

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    if [ "$(id -u)" != 0 ]; then echo "bench: needs redis-server (apt-get install redis-server)" >&2; exit 1; fi
    echo "bench: installing redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
swift build -c release --product apikeyd >/dev/null
swift build -c release --product apikeyd-bench >/dev/null
BIN=$(swift build -c release --show-bin-path)

source bench/lib.sh

# Starts apikeyd on DATA_DIR; sets SERVER_PID and START_S (launch until the port accepts).
start_apikeyd() {
    local data=$1; shift
    local t0; t0=$(date +%s.%N)
    "$BIN/apikeyd" --data-dir "$data" --port "$APIKEYD_PORT" --log-level warning "$@" >"$WORK/apikeyd.log" 2>&1 &
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    wait_port "$APIKEYD_PORT"
    START_S=$(echo "$(date +%s.%N) - $t0" | bc)
}
stop_apikeyd() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

redis-server --port "$REDIS_PORT" --save "" --appendonly no --logfile "$WORK/redis.log" &
PIDS+=($!)
wait_port "$REDIS_PORT"
redis-benchmark -p "$REDIS_PORT" -t set -n 10000 -q >/dev/null   # the key GET reads

# Redis 7 runs every command on one thread (io-threads 1 by default): the comparison server runs
# one event loop too. The all-cores default is measured after the table.
start_apikeyd "$WORK/data" --audit-mode "$AUDIT" --event-loops 1
TOKEN="$WORK/data/admin.token"

# redis-benchmark -t get at C connections x P pipelined; prints "rps p50_us p99_us".
redis_run() {
    local c=$1 p=$2 n=$3
    redis-benchmark -p "$REDIS_PORT" -t get -c "$c" -P "$p" -n "$n" --csv | tail -1 | tr -d '"' |
        awk -F, '{printf "%.0f %.1f %.1f", $2, $5*1000, $7*1000}'
}
apikeyd_run() {
    local line
    line=$("$BIN/apikeyd-bench" load --port "$APIKEYD_PORT" --token-file "$TOKEN" -c "$1" -P "$2" -d "$SECONDS_EACH" --machine "${@:3}")
    echo "$(echo "$line" | field rps) $(echo "$line" | field p50_us) $(echo "$line" | field p99_us) $(echo "$line" | field errors)"
}

echo "apikeyd bench — $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "Check (audit mode: $AUDIT) vs Redis 7 GET, same machine, same run; ${SECONDS_EACH}s each;"
echo "apikeyd with 1 event loop (as Redis: one thread), then with its default of one loop per core ($(nproc))"
echo
printf "%-22s | %10s %10s %6s | %9s %9s %6s | %9s %9s %6s | %s\n" \
    "setting" "redis r/s" "apikeyd" "ratio" "redis p50" "apikeyd" "ratio" "redis p99" "apikeyd" "ratio" "errors"
declare -A REDIS
row() {  # row LABEL C P: prints apikeyd at C x P against the redis figures of the same setting
    read -r r_rps r_p50 r_p99 <<<"${REDIS[$2x$3]}"
    read -r a_rps a_p50 a_p99 a_err <<<"$(apikeyd_run "$2" "$3")"
    printf "%-22s | %10s %10s %6s | %7sµs %7sµs %6s | %7sµs %7sµs %6s | %s\n" "$1" \
        "$r_rps" "$a_rps" "$(ratio "$a_rps" "$r_rps")" "$r_p50" "$a_p50" "$(ratio "$a_p50" "$r_p50")" \
        "$r_p99" "$a_p99" "$(ratio "$a_p99" "$r_p99")" "$a_err"
}
for setting in "1 1 $((17000 * SECONDS_EACH))" "50 1 $((80000 * SECONDS_EACH))" "50 16 $((1200000 * SECONDS_EACH))"; do
    set -- $setting
    REDIS[$1x$2]=$(redis_run "$1" "$2" "$3")
    row "c=$1 P=$2" "$1" "$2"
done
stop_apikeyd
start_apikeyd "$WORK/data" --audit-mode "$AUDIT"
row "c=50 P=1, $(nproc) loops" 50 1
row "c=50 P=16, $(nproc) loops" 50 16
echo "(ratio: apikeyd / redis; above 1 is better for r/s, below 1 is better for latency)"
echo

line=$("$BIN/apikeyd-bench" load --port "$APIKEYD_PORT" --token-file "$TOKEN" --rpc create -c 8 -d "$SECONDS_EACH" --machine)
echo "CreateKey, durable (synchronous=FULL) before the reply, c=8: $(echo "$line" | field rps)/s, p99 $(echo "$line" | field p99_us) µs, errors $(echo "$line" | field errors)"
stop_apikeyd
echo

echo "Index size: start-up and memory at 1k and $BIG keys; check latency at c=1 measured alternately"
echo "(1k, big, 1k, big, 1k, big; medians) so that both see the same machine state"
declare -A PORT START RSS
for keys in 1000 "$BIG"; do
    "$BIN/apikeyd-bench" seed --data-dir "$WORK/k$keys" --keys "$keys" --secret-file "$WORK/k$keys.secret" >/dev/null
done
APIKEYD_PORT_SAVED=$APIKEYD_PORT
servers=0
for keys in 1000 "$BIG"; do
    servers=$((servers + 1))
    APIKEYD_PORT=$((APIKEYD_PORT_SAVED + servers))
    start_apikeyd "$WORK/k$keys" --audit-mode "$AUDIT"
    PORT[$keys]=$APIKEYD_PORT; START[$keys]=$START_S; RSS[$keys]=$(rss_mb "$SERVER_PID")
done
declare -A P50S RPSS
for _ in 1 2 3; do
    for keys in 1000 "$BIG"; do
        line=$("$BIN/apikeyd-bench" load --port "${PORT[$keys]}" --key "$(cat "$WORK/k$keys.secret")" -c 1 -d "$SECONDS_EACH" --machine)
        P50S[$keys]="${P50S[$keys]:-} $(echo "$line" | field p50_us)"
        RPSS[$keys]="${RPSS[$keys]:-} $(echo "$line" | field rps)"
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%-10s | %8s | %7s | %12s | %10s\n" "keys" "start s" "RSS MB" "c=1 p50 µs" "c=1 r/s"
for keys in 1000 "$BIG"; do
    printf "%-10s | %8.2f | %7s | %12s | %10s\n" "$keys" "${START[$keys]}" "${RSS[$keys]}" \
        "$(echo "${P50S[$keys]}" | median)" "$(echo "${RPSS[$keys]}" | median)"
done
echo "c=1 p50 at $BIG keys / at 1000 keys: $(ratio "$(echo "${P50S[$BIG]}" | median)" "$(echo "${P50S[1000]}" | median)")"
