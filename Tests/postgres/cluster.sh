#!/usr/bin/env bash
# A throwaway PostgreSQL cluster in a directory, for the tests (and Tests/postgres/with-cluster.sh):
#
#   Tests/postgres/cluster.sh init DIR     initdb in DIR, start it on a free loopback port, create
#                                          the database apikeyd_test; prints its URL
#   Tests/postgres/cluster.sh stop DIR     stop it (fast shutdown: connections are cut)
#   Tests/postgres/cluster.sh start DIR    start it again, on the same port
#   Tests/postgres/cluster.sh remove DIR   stop it and delete DIR
#
# Streaming replication, for the failover tests:
#   Tests/postgres/cluster.sh standby DIR PRIMARY_DIR   a streaming standby of the cluster in
#                                          PRIMARY_DIR (pg_basebackup -R -c fast), started on a free port;
#                                          prints its URL
#   Tests/postgres/cluster.sh promote DIR  promote the standby in DIR (waits until it is primary)
#   Tests/postgres/cluster.sh crash DIR    stop it as a crash would (immediate: no shutdown checkpoint)
#   Tests/postgres/cluster.sh sync DIR NAMES  set synchronous_standby_names (quoted as given; '' for
#                                          none) and reload
#
# fsync is off unless APIKEYS_PG_FSYNC=on. PostgreSQL refuses to run as root: as root, the
# cluster runs as the `postgres` user that Debian's package creates.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] && [ -x "$bin/initdb" ] || { echo "cluster: PostgreSQL not found (apt-get install postgresql)" >&2; exit 2; }
command=$1 dir=$2
as_owner=()
[ "$(id -u)" = 0 ] && as_owner=(runuser -u postgres --)
pg_start() {
    "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-p $(cat "$dir/port") -k $dir -c listen_addresses=127.0.0.1 -c fsync=${APIKEYS_PG_FSYNC:-off} -c max_connections=200" \
        start >/dev/null
}
case $command in
    init)
        mkdir -p "$dir"
        [ "$(id -u)" = 0 ] && chown postgres: "$dir"
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' > "$dir/port"
        "${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U apikeyd --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        pg_start
        "${as_owner[@]}" "$bin/createdb" -h 127.0.0.1 -p "$(cat "$dir/port")" -U apikeyd apikeyd_test
        echo "postgres://apikeyd@127.0.0.1:$(cat "$dir/port")/apikeyd_test"
        ;;
    standby)
        primary=$3
        mkdir -p "$dir"
        [ "$(id -u)" = 0 ] && chown postgres: "$dir"
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' > "$dir/port"
        "${as_owner[@]}" "$bin/pg_basebackup" -h 127.0.0.1 -p "$(cat "$primary/port")" -U apikeyd -D "$dir/data" -R -X stream -c fast >/dev/null
        pg_start
        echo "postgres://apikeyd@127.0.0.1:$(cat "$dir/port")/apikeyd_test"
        ;;
    promote) "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -w promote >/dev/null ;;
    crash) "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null ;;
    sync)
        "${as_owner[@]}" "$bin/psql" -X -q -h 127.0.0.1 -p "$(cat "$dir/port")" -U apikeyd -d apikeyd_test \
            -c "ALTER SYSTEM SET synchronous_standby_names = '$3'" -c "SELECT pg_reload_conf()" >/dev/null
        ;;
    start) pg_start ;;
    stop) "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null ;;
    remove)
        "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$dir"
        ;;
    *) echo "cluster: init|start|stop|remove|promote|crash DIR, standby DIR PRIMARY_DIR, sync DIR NAMES" >&2; exit 2 ;;
esac
