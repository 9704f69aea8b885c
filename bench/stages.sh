#!/usr/bin/env bash
# bench/stages.sh: one RPC Check and one HTTP /authorize request taken apart (`apikeyd-bench stages`): the time and the heap
# allocations per check of each stage the connection handler runs, then of all of them together.
# Allocations are counted per thread by bench/allocations.c, preloaded: they are the figure to
# compare build against build on a noisy machine (times are printed beside them).
#   STAGES_CHECKS  checks per stage (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product apikeyd-bench >/dev/null 2>&1 || { echo "stages: build failed" >&2; exit 1; }
BIN=$(swift build -c release --show-bin-path)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cc=$(command -v cc || command -v clang)
"$cc" -O2 -shared -fPIC -o "$WORK/allocations.so" bench/allocations.c
LD_PRELOAD="$WORK/allocations.so" "$BIN/apikeyd-bench" stages --checks "${STAGES_CHECKS:-200000}"
