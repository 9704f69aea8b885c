#!/usr/bin/env bash
# make bench-deployment: what TLS, metrics, forward-auth through nginx and a busy admin API cost,
# as ratios of interleaved runs (same load generator, same settings, 3 rounds, medians).
#   BENCH_SECONDS  seconds per measurement (default 5)
#   BENCH_ROUNDS   rounds (default 3)
#   BENCH_PARTS    which comparisons (default "tls metrics forward-auth admin-api")
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
PARTS=${BENCH_PARTS:-tls metrics forward-auth admin-api}
part() { [[ " $PARTS " == *" $1 "* ]]; }
for tool in nginx wrk openssl bc; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        [ "$(id -u)" = 0 ] || { echo "bench: needs $tool" >&2; exit 1; }
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk openssl bc >/dev/null
        break
    }
done
swift build -c release --product apikeyd >/dev/null
swift build -c release --product apikeyd-bench >/dev/null
swift build -c release --product apikey >/dev/null
BIN=$(swift build -c release --show-bin-path)

source bench/lib.sh

# Certificates for 127.0.0.1 (a CA and a server certificate it signs).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=bench-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=bench -keyout "$WORK/server.key" \
    -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 1 \
    -extfile "$WORK/ext" -out "$WORK/server.pem" 2>/dev/null

start() {  # start NAME PORT ARGS...: an apikeyd on PORT with its own data directory
    local name=$1 port=$2; shift 2
    "$BIN/apikeyd" --data-dir "$WORK/$name" --port "$port" --log-level warning "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port"
}
start plain 17501
start tls 17502 --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key"
start metrics 17503 --http-port 17513
printf 'GET /api/** jobs:read\n' > "$WORK/routes"
start http 17504 --http-port 17514 --routes "$WORK/routes"
HTTP_PID=${PIDS[-1]}
start admin 17505 --admin-port 17515
wait_port 17513; wait_port 17514; wait_port 17515

load() {  # load PORT TOKEN-DIR C P [ARGS]: prints "rps p99_us"
    local line
    line=$("$BIN/apikeyd-bench" load --port "$1" --token-file "$WORK/$2/admin.token" -c "$3" -P "$4" \
        -d "$SECONDS_EACH" --machine "${@:5}")
    echo "$(echo "$line" | field rps) $(echo "$line" | field p99_us)"
}

# nginx: /plain proxies straight to a fixed answer, /api/ asks apikeyd first (as in the README).
nginx_conf nginx "$(cat <<CONF
    upstream apikeyd { server 127.0.0.1:17514; keepalive 64; }
    upstream backend { server 127.0.0.1:17521; keepalive 64; }
    upstream free { server 127.0.0.1:17522; keepalive 64; }
    server { listen 127.0.0.1:17521; location / { return 200 "ok\n"; } }
    server {
        listen 127.0.0.1:17520;
        location /plain/ { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location /api/ {
            auth_request /_apikeyd;
            proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
        }
        # The ceiling of any authorizer on this machine: the same auth_request hop to another
        # process, a second nginx that answers "return 200" (below), instead of apikeyd.
        location /free/ {
            auth_request /_free;
            proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
        }
        location = /_free {
            internal;
            proxy_pass http://free/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }
        location = /_apikeyd {
            internal;
            proxy_pass http://apikeyd/authorize;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method \$request_method;
            proxy_set_header X-Original-URI \$request_uri;
        }
    }
CONF
)"
# The free authorizer: another nginx process that answers every request with 200.
nginx_conf free '    server { listen 127.0.0.1:17522; location / { return 200 ""; } }'
nginx_start nginx
nginx_start free
FREE_PID=$NGINX_PID
wait_port 17520; wait_port 17522
# A key for wrk, made through the RPC port of the forward-auth server.
SECRET=$("$BIN/apikey" create wrk -p jobs:read --server 127.0.0.1:17504 \
    --token-file "$WORK/http/admin.token" --json 2>/dev/null | sed -n 's/.*"secret" : "\(dbm_[^"]*\)".*/\1/p')
[ -n "$SECRET" ] || { echo "bench: could not create a key" >&2; exit 1; }
wrk_run() {  # wrk_run PATH [URL]: prints "rps p99_us" of wrk on the front nginx's PATH (or on URL)
    wrk -t1 -c50 -d"${SECONDS_EACH}s" --latency -H "Authorization: Bearer $SECRET" "${2:-http://127.0.0.1:17520$1}" |
        awk '/Requests\/sec/ {rps=$2} /^ +99%/ {v=$2; u=substr(v, length(v)-1); n=v+0;
             if (u=="ms") n*=1000; else if (u=="us") n*=1; else if (substr(v,length(v))=="s") n*=1000000;
             p99=n} END {printf "%.0f %.0f", rps, p99}'
}

# The admin API kept busy while checks are measured: wrk listing a page of 100 keys (JSON from the
# store, off the event loops) on 8 connections, for as long as the measurement.
if part admin-api; then
    for i in $(seq 1 100); do
        "$BIN/apikey" create "listed-$i" -p jobs:read --server 127.0.0.1:17505 --token-file "$WORK/admin/admin.token" \
            >/dev/null
    done
fi
busy_with() {  # busy_with URL COMMAND...: runs COMMAND while wrk loads URL
    local url=$1; shift
    wrk -t1 -c8 -d"$((SECONDS_EACH + 1))s" -H "Authorization: Bearer $(cat "$WORK/admin/admin.token")" \
        "$url" >"$WORK/busy-wrk.txt" 2>&1 &
    local wrk_pid=$!
    "$@"
    wait "$wrk_pid"
    awk '/Requests\/sec/ {print $2}' "$WORK/busy-wrk.txt" >>"$WORK/busy-rps-$(echo "$url" | cut -d/ -f3)"
}
busy_admin() { busy_with "http://127.0.0.1:17515/v1/keys?page_size=100" "$@"; }
# The control: the same wrk load on another process (nginx sending a page of the same size), so
# that what wrk itself takes of the 2 cores is not charged to the admin API.
busy_control() { busy_with "http://127.0.0.1:17524/page.json" "$@"; }
if part admin-api; then
    "$BIN/apikey" list --json --server 127.0.0.1:17505 --token-file "$WORK/admin/admin.token" >"$WORK/page.json"
    nginx_conf control "    server { listen 127.0.0.1:17524; root $WORK; location / { } }"
    nginx_start control
    wait_port 17524
fi

declare -A RPS P99 CPU
# measure_cpu NAME PID COMMAND...: as measure, and the server's CPU µs per request into CPU[NAME].
measure_cpu() {
    local before rps p99
    before=$(cpu_us "$2")
    read -r rps p99 <<<"$("${@:3}")"
    RPS[$1]+="$rps "; P99[$1]+="$p99 "
    CPU[$1]+="$(cpu_us_per_request "$2" "$before" "$rps") "
}
measure() {  # measure NAME COMMAND...: appends one round's figures
    local rps p99
    read -r rps p99 <<<"$("${@:2}")"
    RPS[$1]+="$rps "; P99[$1]+="$p99 "
}
for round in $(seq 1 "$ROUNDS"); do
    if part tls; then
        for setting in "1 1" "50 1" "50 16"; do
            read -r c p <<<"$setting"
            measure "plain $c $p" load 17501 plain "$c" "$p"
            measure "tls $c $p" load 17502 tls "$c" "$p" --ca "$WORK/ca.pem"
        done
    fi
    if part metrics; then
        for setting in "50 1" "50 16"; do
            read -r c p <<<"$setting"
            measure "nometrics $c $p" load 17501 plain "$c" "$p"
            measure "metrics $c $p" load 17503 metrics "$c" "$p"
        done
    fi
    if part admin-api; then
        for setting in "1 1" "50 1" "50 16"; do
            read -r c p <<<"$setting"
            measure "quiet $c $p" load 17505 admin "$c" "$p"
            measure "control $c $p" busy_control load 17505 admin "$c" "$p"
            measure "busy $c $p" busy_admin load 17505 admin "$c" "$p"
        done
    fi
    if part forward-auth; then
        measure "nginx" wrk_run /plain/x
        measure "nginx+auth" wrk_run /api/x
        measure "nginx+free-auth" wrk_run /free/x
        # Straight at each authorizer, no proxy in front: nginx answering "return 200" on one
        # worker, and apikeyd's /authorize (the key's check, audited as every check).
        measure_cpu "free-direct" "$FREE_PID" wrk_run - http://127.0.0.1:17522/authorize/api/x
        measure_cpu "apikeyd-direct" "$HTTP_PID" wrk_run - http://127.0.0.1:17514/authorize/api/x
    fi
done

echo "apikeyd deployment bench — $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores; ${ROUNDS} interleaved rounds of ${SECONDS_EACH}s, medians"
printf "%-34s | %10s %10s %6s | %9s %9s\n" "comparison" "base r/s" "with r/s" "ratio" "base p99" "with p99"
row() {  # row LABEL BASE WITH
    local br wr bp wp
    br=$(echo "${RPS[$2]}" | median); wr=$(echo "${RPS[$3]}" | median)
    bp=$(echo "${P99[$2]}" | median); wp=$(echo "${P99[$3]}" | median)
    printf "%-34s | %10s %10s %6s | %7sµs %7sµs\n" "$1" "$br" "$wr" "$(ratio "$wr" "$br")" "$bp" "$wp"
}
if part tls; then
    for setting in "1 1" "50 1" "50 16"; do
        read -r c p <<<"$setting"
        row "Check TLS vs plain, c=$c P=$p" "plain $c $p" "tls $c $p"
    done
fi
if part metrics; then
    for setting in "50 1" "50 16"; do
        read -r c p <<<"$setting"
        row "Check with metrics vs none, c=$c P=$p" "nometrics $c $p" "metrics $c $p"
    done
fi
if part forward-auth; then
    row "nginx+forward-auth vs nginx, c=50" "nginx" "nginx+auth"
    row "nginx+free auth vs nginx, c=50" "nginx" "nginx+free-auth"
    row "forward-auth vs free auth, c=50" "nginx+free-auth" "nginx+auth"
    row "/authorize vs nginx return 200, c=50" "free-direct" "apikeyd-direct"
    echo "(server CPU per request, user + system, medians: nginx return 200 $(echo "${CPU[free-direct]}" | median) µs," \
        "apikeyd /authorize $(echo "${CPU[apikeyd-direct]}" | median) µs)"
fi
if part admin-api; then
    for setting in "1 1" "50 1" "50 16"; do
        read -r c p <<<"$setting"
        row "Check, wrk on nginx vs idle, c=$c P=$p" "quiet $c $p" "control $c $p"
        row "Check, wrk on admin API vs on nginx, c=$c P=$p" "control $c $p" "busy $c $p"
    done
    echo "(meanwhile: admin API $(median <"$WORK/busy-rps-127.0.0.1:17515" | tr -d '\n') pages of 100 keys/s," \
        "nginx $(median <"$WORK/busy-rps-127.0.0.1:17524" | tr -d '\n') pages/s of the same size; medians)"
fi
