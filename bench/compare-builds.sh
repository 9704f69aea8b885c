#!/usr/bin/env bash
# Checks/s of two builds of apikeyd on this machine, as ratios of interleaved runs with the same
# load generator (bench/loadgen.c) and settings: each server on its own data directory, one key,
# loaded in turn (A, B, A, B, ...), the idle one's audit writer included. For what a change costs:
#   bench/compare-builds.sh BIN_DIR_BEFORE BIN_DIR_AFTER   (each holding apikeyd and apikey)
#   BENCH_SECONDS  seconds per measurement (default 4)
#   BENCH_ROUNDS   interleaved rounds (default 5)
#   BENCH_SETTINGS connections and pipeline depth per setting (default "50 1,50 16")
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BIN_DIR_BEFORE BIN_DIR_AFTER" >&2; exit 2; }
SECONDS_EACH=${BENCH_SECONDS:-4}
ROUNDS=${BENCH_ROUNDS:-5}
IFS=, read -r -a SETTINGS <<<"${BENCH_SETTINGS:-50 1,50 16}"
command -v bc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null; }
source bench/lib.sh
build_loadgen

declare -A PORT=([before]=17521 [after]=17522) BIN=([before]=$1 [after]=$2) KEY
for side in before after; do
    "${BIN[$side]}/apikeyd" --data-dir "$WORK/$side" --port "${PORT[$side]}" --log-level warning \
        >"$WORK/$side.log" 2>&1 &
    PIDS+=($!)
    wait_port "${PORT[$side]}"
    KEY[$side]=$(APIKEY_SERVER="127.0.0.1:${PORT[$side]}" APIKEY_TOKEN_FILE="$WORK/$side/admin.token" \
        "${BIN[$side]}/apikey" create bench -p jobs:read --json | sed -n 's/.*"secret" *: *"\([^"]*\)".*/\1/p')
    [ -n "${KEY[$side]}" ] || { echo "bench: could not create a key on $side" >&2; exit 1; }
done

declare -A RPS P99
for round in $(seq 1 "$ROUNDS"); do
    for setting in "${SETTINGS[@]}"; do
        read -r c p <<<"$setting"
        for side in before after; do
            measure "$side" "${PORT[$side]}" "${KEY[$side]}" "$c" "$p"
        done
    done
done
echo "two builds — $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores; $ROUNDS interleaved rounds of ${SECONDS_EACH}s, medians"
printf '%-14s | %10s %10s %6s | %9s %9s\n' "setting" "before r/s" "after r/s" "ratio" "before p99" "after p99"
for setting in "${SETTINGS[@]}"; do
    read -r c p <<<"$setting"
    before=$(echo "${RPS[before $c $p]}" | median)
    after=$(echo "${RPS[after $c $p]}" | median)
    printf '%-14s | %10s %10s %6s | %8sµs %8sµs\n' "c=$c P=$p" "$before" "$after" "$(ratio "$after" "$before")" \
        "$(echo "${P99[before $c $p]}" | median)" "$(echo "${P99[after $c $p]}" | median)"
done
for setting in "${SETTINGS[@]}"; do
    read -r c p <<<"$setting"
    echo "c=$c P=$p each round: before ${RPS[before $c $p]}| after ${RPS[after $c $p]}"
done
