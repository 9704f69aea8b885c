#!/usr/bin/env bash
# packaging/apikeyd.service as systemd reads it: `systemd-analyze verify` on a copy whose
# ExecStart names the built binary (verify checks that it exists). Fails on any complaint.
#   Tests/packaging/verify-unit.sh APIKEYD
set -euo pipefail
binary=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|/usr/local/bin/apikeyd|$binary|" "$root/packaging/apikeyd.service" > "$work/apikeyd.service"
output=$(systemd-analyze verify "$work/apikeyd.service" 2>&1) || { echo "$output" >&2; exit 1; }
if [ -n "$output" ]; then
    echo "systemd-analyze verify complained:" >&2
    echo "$output" >&2
    exit 1
fi
echo "packaging/apikeyd.service: systemd-analyze verify passed"
