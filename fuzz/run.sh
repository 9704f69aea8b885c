#!/usr/bin/env bash
# Builds the libFuzzer target over the wire layer (address sanitizer, coverage) and runs it.
#   fuzz/run.sh --runs N       N inputs (make fuzz: 10^7)
#   fuzz/run.sh --seconds S    for S seconds (make test: 60)
# Prints one line with the figures; exits non-zero on a crash, a leak or a failed round trip
# (libFuzzer then writes the input to fuzz/artifacts/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
limit=(-runs=10000000)
case "${1:-}" in
    --runs) limit=(-runs="$2") ;;
    --seconds) limit=(-max_total_time="$2") ;;
    "") ;;
    *) echo "usage: fuzz/run.sh [--runs N | --seconds S]" >&2; exit 2 ;;
esac

# A path dependency is named after its folder; the clone's folder may have any name.
mkdir -p .deps && ln -sfn ../.. .deps/apikeyd
fuzzer_lib=$(ls /opt/swift/usr/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a 2>/dev/null | head -1 || true)
[ -z "$fuzzer_lib" ] && fuzzer_lib=$(find "$(dirname "$(dirname "$(command -v swiftc)")")" -name 'libclang_rt.fuzzer_no_main-x86_64.a' | head -1)
[ -n "$fuzzer_lib" ] || { echo "fuzz: libclang_rt.fuzzer_no_main not found in the Swift toolchain" >&2; exit 2; }
# SwiftPM gives every executable its own `main`, so libFuzzer's driver is linked without its main
# (fuzzer_no_main) and called from ours; coverage is asked for explicitly for the same reason.
swift build -c release --product apikeys-fuzz \
    -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table \
    -Xcc -fsanitize=fuzzer-no-link,address -Xlinker "$fuzzer_lib" -Xlinker -lstdc++ 2>&1 \
    | grep -v "Cannot export local symbol" | tail -3

python=${APIKEYS_INTEROP_PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" make_seeds.py "$root/proto" "$work" "$work/seeds" >/dev/null
mkdir -p corpus artifacts
log="$work/fuzz.log"
status=0
.build/release/apikeys-fuzz "${limit[@]}" -artifact_prefix=artifacts/ -print_final_stats=1 corpus "$work/seeds" \
    >"$log" 2>&1 || status=$?
runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
seconds=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' || echo "?")
coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
if [ "$status" -ne 0 ]; then
    tail -40 "$log"
    echo "fuzz: FAILED after $runs inputs (exit $status); the input is in fuzz/artifacts/"
    exit 1
fi
echo "fuzz: $runs inputs in $seconds s, 0 crashes, 0 leaks, 0 round-trip failures (edges covered: $coverage, corpus: $(ls corpus | wc -l) files)"
