#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster (Tests/postgres/cluster.sh): its URL in
# APIKEYS_TEST_DATABASE_URL (the tests that need PostgreSQL read it), its binaries' directory in
# APIKEYS_TEST_PG_BIN; stopped and removed when the command ends, whatever its outcome.
#
#   Tests/postgres/with-cluster.sh swift test --skip-build
#
# Needs Debian's postgresql package (`make deps` installs it). fsync is off (a test cluster need
# not survive a power loss) unless APIKEYS_PG_FSYNC=on, as for benchmarks of durable writes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/apikeyd-pg.XXXXXX)
trap '"$here/cluster.sh" remove "$dir"' EXIT
url=$("$here/cluster.sh" init "$dir")
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
echo "with-cluster: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $url" >&2
export APIKEYS_TEST_DATABASE_URL=$url
export APIKEYS_TEST_PG_BIN=$bin
"$@"
