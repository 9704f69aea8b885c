#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster: initdb in a temp dir, started on a free
# loopback port, its URL in APIKEYS_TEST_DATABASE_URL (the tests that need PostgreSQL read it),
# stopped and removed when the command ends, whatever its outcome.
#
#   Tests/postgres/with-cluster.sh swift test --skip-build
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` user that
# Debian's package creates. Needs Debian's postgresql package (`make deps` installs it).
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] && [ -x "$bin/initdb" ] || { echo "with-cluster: PostgreSQL not found (apt-get install postgresql)" >&2; exit 2; }

dir=$(mktemp -d /tmp/apikeyd-pg.XXXXXX)
as_owner=()
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    as_owner=(runuser -u postgres --)
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

stop() {
    "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap stop EXIT

"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U apikeyd --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
"${as_owner[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U apikeyd apikeyd_test
echo "with-cluster: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2

export APIKEYS_TEST_DATABASE_URL="postgres://apikeyd@127.0.0.1:$port/apikeyd_test"
export APIKEYS_TEST_PG_BIN="$bin"
"$@"
