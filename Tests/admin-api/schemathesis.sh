#!/usr/bin/env bash
# The admin API against its own OpenAPI document: schemathesis (PyPI) generates valid and invalid
# requests for every operation from the document the server serves, sends them with the bootstrap
# token to a real apikeyd (SQLite in a temporary directory), and checks every answer: no 5xx, status,
# content type, headers and body as the document says, invalid input refused.
#
#   Tests/admin-api/schemathesis.sh APIKEYD [MAX_EXAMPLES]
#
# Left out: positive_data_acceptance (the document cannot say everything the server checks: a
# permission must be in the catalog, names unique, an expiry in the future) and
# revokeAdminToken (it would revoke the run's own token; the Swift tests cover it).
set -euo pipefail
binary=$1
examples=${2:-25}
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${APIKEYS_INTEROP_PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# --admin-rate 0: the generated requests come faster than the default rate limit allows.
"$binary" --data-dir "$work/data" --port 0 --admin-port 0 --admin-rate 0 > "$work/log" 2>&1 &
server=$!
url=""
for _ in $(seq 1 100); do
    url=$(sed -n 's/.*url=\(http:[^ ]*\).*admin API listening.*/\1/p' "$work/log" | head -1)
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { echo "schemathesis: the admin API did not start" >&2; cat "$work/log" >&2; exit 1; }
token=$(cat "$work/data/admin.token")

status=0
"$(dirname "$python")/schemathesis" run "$url/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance \
    --exclude-operation-id revokeAdminToken \
    --max-examples "$examples" --seed "${SCHEMATHESIS_SEED:-20261206}" --workers 2 \
    --request-timeout 10 --suppress-health-check all --warnings off \
    || status=$?
if ! kill -0 "$server" 2>/dev/null; then
    echo "schemathesis: apikeyd is no longer running" >&2
    tail -40 "$work/log" >&2
    status=1
fi
if grep -q "Fatal error" "$work/log"; then
    echo "schemathesis: apikeyd crashed" >&2
    status=1
fi
exit $status
