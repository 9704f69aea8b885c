#!/usr/bin/env bash
# Runs the Swift suites (already built) and fails when any test, suite or test case was skipped:
# a missing prerequisite (the PostgreSQL cluster, the built binaries, the interop Python, nginx,
# root for a tmpfs) must not turn into a green run that covered less. `make test` runs this
# under Tests/postgres/with-cluster.sh with APIKEYS_INTEROP_PYTHON set.
#   Tests/swift-test.sh [swift test options...]     (e.g. --filter NginxTests)
#   APIKEYS_ALLOW_SKIPS=1 Tests/swift-test.sh ...    count the skips, do not fail on them
set -uo pipefail
swift=${SWIFT:-swift}
# SwiftNIO's strict mode: work scheduled on an event loop that has shut down crashes the test (and
# every apikeyd it starts) instead of printing an error and being dropped.
export SWIFTNIO_STRICT=${SWIFTNIO_STRICT:-1}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A hang fails the run in 20 minutes instead of holding CI (the suites take about a minute).
timeout -k 30 "${APIKEYS_TEST_TIMEOUT:-1200}" "$swift" test --skip-build --disable-xctest "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "swift test: TIMED OUT after ${APIKEYS_TEST_TIMEOUT:-1200} s (a hang: look at the tests started and not finished)"
# Swift Testing marks a skipped test, suite or cancelled test case with "➜ … skipped".
skipped=$(grep -cE '^➜ (Test|Suite|Test case).* (skipped|cancelled)' "$log" || true)
passed=$(grep -oE 'Test run with [0-9]+ tests?' "$log" | grep -oE '[0-9]+' | tail -1 || true)
echo "swift test: ${passed:-?} tests run, $skipped skipped (exit $status)"
if [ "$skipped" -gt 0 ]; then
    grep -E '^➜ (Test|Suite|Test case).* (skipped|cancelled)' "$log" | sed 's/^/  /'
    if [ "${APIKEYS_ALLOW_SKIPS:-0}" != 1 ]; then
        echo "swift test: FAILED: $skipped skipped (every prerequisite is required; APIKEYS_ALLOW_SKIPS=1 to allow)"
        exit 1
    fi
fi
exit "$status"
