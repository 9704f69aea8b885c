#!/usr/bin/env bash
# make bench: apikeyd's Authorize against Redis GET on this machine, in one run, as ratios, both
# driven by the same load generator (bench/loadgen.c; redis-benchmark is not used: at 50
# connections its client, not Redis, is the bottleneck).
#   BENCH_SECONDS  seconds per measurement (default 5)
#   BENCH_ROUNDS   interleaved rounds of the comparison (default 3)
#   BENCH_KEYS     keys for the large-index measurement (default 1000000)
#   BENCH_AUDIT    audit mode of the server for the Check runs: full (default) or aggregated
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${BENCH_SECONDS:-5}
BIG=${BENCH_KEYS:-1000000}
AUDIT=${BENCH_AUDIT:-full}
REDIS_PORT=16379
APIKEYD_PORT=17411

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    if [ "$(id -u)" != 0 ]; then echo "bench: needs redis-server (apt-get install redis-server)" >&2; exit 1; fi
    echo "bench: installing redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
command -v bc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null; }
swift build -c release --product apikeyd >/dev/null
swift build -c release --product apikeyd-bench >/dev/null
BIN=$(swift build -c release --show-bin-path)
ROUNDS=${BENCH_ROUNDS:-3}

source bench/lib.sh
build_loadgen

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
# The value GET reads: about the size of a Check reply's payload.
redis-cli -p "$REDIS_PORT" SET apikeyd-bench "allow jobs:read key_0123456789abcdef" >/dev/null

# Redis 7 runs every command on one thread (io-threads 1 by default): the comparison server runs
# one event loop too; apikeyd's default of one loop per core is measured beside it.
"$BIN/apikeyd-bench" seed --data-dir "$WORK/data" --keys 1 --secret-file "$WORK/secret" >/dev/null
cp -r "$WORK/data" "$WORK/data-loops"
start_apikeyd "$WORK/data" --audit-mode "$AUDIT" --event-loops 1
TOKEN="$WORK/data/admin.token"
ONE_LOOP_PORT=$APIKEYD_PORT ONE_LOOP_PID=$SERVER_PID
APIKEYD_PORT=$((APIKEYD_PORT + 10))
start_apikeyd "$WORK/data-loops" --audit-mode "$AUDIT"
LOOPS_PORT=$APIKEYD_PORT
# The framework's floor: the leanest SwiftNIO server of the same protocol (apikeyd-bench floor:
# apikeyd's framing and codec, every Check answered "allow" from one packed reply, no key, no
# audit, no per-connection bookkeeping), one loop: what apikeyd would do with no work of its own.
FLOOR_PORT=$((APIKEYD_PORT + 10))
"$BIN/apikeyd-bench" floor --port "$FLOOR_PORT" --event-loops 1 >"$WORK/floor.log" 2>&1 &
PIDS+=($!)
wait_port "$FLOOR_PORT"

# One load generator for every server (bench/loadgen.c, one thread, closed loop), speaking RESP
# GET to Redis and Check to apikeyd. Prints "rps p50_us p99_us client_cpu errors".
drive() {  # drive TARGET C P
    local line args
    case $1 in
        redis) args=(--port "$REDIS_PORT" --proto resp) ;;
        apikeyd) args=(--port "$ONE_LOOP_PORT" --proto apikeyd --key "$(cat "$WORK/secret")") ;;
        loops) args=(--port "$LOOPS_PORT" --proto apikeyd --key "$(cat "$WORK/secret")") ;;
        floor) args=(--port "$FLOOR_PORT" --proto apikeyd --key "$(cat "$WORK/secret")") ;;
    esac
    line=$("$WORK/loadgen" "${args[@]}" -c "$2" -P "$3" -d "$SECONDS_EACH")
    for f in rps p50_us p99_us client_cpu errors; do printf "%s " "$(echo "$line" | field $f)"; done
}

echo "apikeyd bench — $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "Check (audit mode: $AUDIT) vs Redis $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p') GET, one generator for both"
echo "(bench/loadgen.c, one epoll thread); $ROUNDS interleaved rounds of ${SECONDS_EACH}s, medians."
echo "apikeyd with 1 event loop (as Redis: one thread), and with its default of one loop per core ($(nproc));"
echo "SwiftNIO floor: apikeyd-bench floor, the same protocol answered with no work (no key, no audit), 1 loop"
echo
SETTINGS=("1 1" "50 1" "50 16")
declare -A RPS P50 P99 CPU ERR
for _ in $(seq 1 "$ROUNDS"); do
    for setting in "${SETTINGS[@]}"; do
        read -r c p <<<"$setting"
        for target in redis apikeyd loops floor; do
            [ "$target" != redis ] && [ "$target" != apikeyd ] && [ "$c" = 1 ] && continue
            read -r rps p50 p99 cpu err <<<"$(drive "$target" "$c" "$p")"
            k="$target $c $p"
            RPS[$k]+="$rps "; P50[$k]+="$p50 "; P99[$k]+="$p99 "; CPU[$k]+="$cpu "; ERR[$k]+="$err "
        done
    done
done
printf "%-26s | %9s %9s %5s | %8s %8s | %8s %8s | %s\n" \
    "setting" "redis r/s" "apikeyd" "ratio" "redis p50" "apikeyd" "redis p99" "apikeyd" "generator CPU (redis/apikeyd)"
row() {  # row LABEL TARGET C P
    local r="redis $3 $4" a="$2 $3 $4" rr ar rc ac flag=""
    rr=$(echo "${RPS[$r]}" | median); ar=$(echo "${RPS[$a]}" | median)
    rc=$(echo "${CPU[$r]}" | median); ac=$(echo "${CPU[$a]}" | median)
    # A generator near a whole core is the bottleneck of that run: its figure is a floor.
    [ "$(echo "$rc >= 0.9" | bc)" = 1 ] && flag+=" redis run generator-bound;"
    [ "$(echo "$ac >= 0.9" | bc)" = 1 ] && flag+=" apikeyd run generator-bound;"
    printf "%-26s | %9s %9s %5s | %6sµs %6sµs | %6sµs %6sµs | %s / %s%s\n" "$1" "$rr" "$ar" "$(ratio "$ar" "$rr")" \
        "$(echo "${P50[$r]}" | median)" "$(echo "${P50[$a]}" | median)" \
        "$(echo "${P99[$r]}" | median)" "$(echo "${P99[$a]}" | median)" "$rc" "$ac" "$flag"
}
row "c=1 P=1" apikeyd 1 1
row "c=50 P=1" apikeyd 50 1
row "c=50 P=16" apikeyd 50 16
row "c=50 P=1, $(nproc) loops" loops 50 1
row "c=50 P=16, $(nproc) loops" loops 50 16
row "c=50 P=1, SwiftNIO floor" floor 50 1
row "c=50 P=16, SwiftNIO floor" floor 50 16
for p in 1 16; do
    echo "c=50 P=$p: apikeyd (1 loop) / SwiftNIO floor: $(ratio "$(echo "${RPS[apikeyd 50 $p]}" | median)" "$(echo "${RPS[floor 50 $p]}" | median)")"
done
echo "(ratio: the row's server (apikeyd, or the floor) / redis r/s; errors: $(for k in "${!ERR[@]}"; do echo "${ERR[$k]}"; done | tr ' ' '\n' | grep . | sort -u | tr '\n' ' '))"
echo
stop_apikeyd
SERVER_PID=$ONE_LOOP_PID stop_apikeyd
APIKEYD_PORT=$ONE_LOOP_PORT
start_apikeyd "$WORK/data" --audit-mode "$AUDIT"

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
printf "%-10s | %8s | %7s | %12s | %10s\n" "keys" "start s" "RSS MB" "c=1 p50 µs" "c=1 r/s"
for keys in 1000 "$BIG"; do
    printf "%-10s | %8.2f | %7s | %12s | %10s\n" "$keys" "${START[$keys]}" "${RSS[$keys]}" \
        "$(echo "${P50S[$keys]}" | median)" "$(echo "${RPSS[$keys]}" | median)"
done
echo "c=1 p50 at $BIG keys / at 1000 keys: $(ratio "$(echo "${P50S[$BIG]}" | median)" "$(echo "${P50S[1000]}" | median)")"
