#!/usr/bin/env bash
# Forward-auth of two builds of apikeyd on this machine, interleaved with the same wrk settings
# (-t1 -c50): /authorize straight at each build's HTTP port beside nginx answering "return 200"
# on one worker, and each build behind nginx auth_request beside the same chain with that nginx
# as a zero-cost authorizer. Each figure: requests/s and the server's CPU (user + system, every
# thread) per request, medians of the rounds.
#   bench/compare-forward-auth.sh BIN_DIR_BEFORE BIN_DIR_AFTER   (each holding apikeyd and apikey)
# When BIN_DIR_AFTER holds apikeyd-bench too, its `floor --http` (NIOHTTP1's decoder, every request
# answered 200 from fixed bytes, as many loops as apikeyd) is measured straight as well: the
# SwiftNIO floor under apikeyd's HTTP port.
#   BENCH_SECONDS  seconds per measurement (default 4)
#   BENCH_ROUNDS   interleaved rounds (default 3)
#   BENCH_EVENT_LOOPS  event loops of both apikeyd builds and the floor (default: apikeyd's, one per
#                  core; 1 is like for like with the one nginx worker)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 BIN_DIR_BEFORE BIN_DIR_AFTER" >&2; exit 2; }
SECONDS_EACH=${BENCH_SECONDS:-4}
ROUNDS=${BENCH_ROUNDS:-3}
LOOPS=${BENCH_EVENT_LOOPS:-}
for tool in nginx wrk bc curl; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk bc curl >/dev/null
        break
    }
done
source bench/lib.sh

printf 'GET /api/** jobs:read\n' >"$WORK/routes"
declare -A BIN=([before]=$1 [after]=$2) PID SECRET
declare -A RPC_PORT=([before]=18601 [after]=18602) HTTP_PORT=([before]=18611 [after]=18612) CHAIN_PORT=([before]=18631 [after]=18632)
for side in before after; do
    "${BIN[$side]}/apikeyd" --data-dir "$WORK/$side" --port "${RPC_PORT[$side]}" --http-port "${HTTP_PORT[$side]}" \
        --routes "$WORK/routes" --log-level warning ${LOOPS:+--event-loops "$LOOPS"} >"$WORK/$side.log" 2>&1 &
    PIDS+=($!); PID[$side]=$!
    wait_port "${RPC_PORT[$side]}"; wait_port "${HTTP_PORT[$side]}"
    SECRET[$side]=$("${BIN[$side]}/apikey" create wrk -p jobs:read --server "127.0.0.1:${RPC_PORT[$side]}" \
        --token-file "$WORK/$side/admin.token" --json | sed -n 's/.*"secret" *: *"\(dbm_[^"]*\)".*/\1/p')
    [ -n "${SECRET[$side]}" ] || { echo "bench: could not create a key on $side" >&2; exit 1; }
done

FLOOR_PORT=18640
if [ -x "${BIN[after]}/apikeyd-bench" ]; then
    "${BIN[after]}/apikeyd-bench" floor --http --port "$FLOOR_PORT" --event-loops "${LOOPS:-$(nproc)}" >"$WORK/floor.log" 2>&1 &
    PIDS+=($!); FLOOR_PID=$!
    wait_port "$FLOOR_PORT"
fi

# auth LOCATION-NAME UPSTREAM-URI: /api/ behind auth_request to that upstream, as the README configures it.
auth() {
    cat <<CONF
        location /api/ { auth_request /_auth; proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location = /_auth {
            internal; proxy_pass http://$1$2; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_pass_request_body off; proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method \$request_method; proxy_set_header X-Original-URI \$request_uri;
        }
CONF
}
nginx_conf free '    server { listen 127.0.0.1:18622; location / { return 200 ""; } }'
nginx_start free
FREE_PID=$NGINX_PID
nginx_conf front "$(cat <<CONF
    upstream backend { server 127.0.0.1:18621; keepalive 64; }
    upstream free { server 127.0.0.1:18622; keepalive 64; }
    upstream before { server 127.0.0.1:${HTTP_PORT[before]}; keepalive 64; }
    upstream after { server 127.0.0.1:${HTTP_PORT[after]}; keepalive 64; }
    server { listen 127.0.0.1:18621; location / { return 200 "ok\n"; } }
    server { listen 127.0.0.1:18630;
$(auth free /)
    }
    server { listen 127.0.0.1:${CHAIN_PORT[before]};
$(auth before /authorize)
    }
    server { listen 127.0.0.1:${CHAIN_PORT[after]};
$(auth after /authorize)
    }
CONF
)"
nginx_start front
for port in 18621 18622 18630 "${CHAIN_PORT[before]}" "${CHAIN_PORT[after]}"; do wait_port "$port"; done
for side in before after; do
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${SECRET[$side]}" \
        "http://127.0.0.1:${CHAIN_PORT[$side]}/api/x")
    [ "$status" = 200 ] || { echo "bench: the $side chain answered $status, not 200" >&2; exit 1; }
done

declare -A RPS CPU
run() {  # run NAME SECRET URL SERVER-PID: one wrk measurement
    local before rps
    before=$(cpu_us "$4")
    rps=$(wrk -t1 -c50 -d"${SECONDS_EACH}s" -H "Authorization: Bearer $2" "$3" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    RPS[$1]+="$rps "
    CPU[$1]+="$(cpu_us_per_request "$4" "$before" "$rps") "
}
for _ in $(seq 1 "$ROUNDS"); do
    run "direct nginx" "${SECRET[before]}" http://127.0.0.1:18622/authorize/api/x "$FREE_PID"
    for side in before after; do
        run "direct $side" "${SECRET[$side]}" "http://127.0.0.1:${HTTP_PORT[$side]}/authorize/api/x" "${PID[$side]}"
    done
    if [ -n "${FLOOR_PID:-}" ]; then
        run "direct floor" "${SECRET[after]}" "http://127.0.0.1:$FLOOR_PORT/authorize/api/x" "$FLOOR_PID"
    fi
    run "chain nginx" "${SECRET[before]}" http://127.0.0.1:18630/api/x "$FREE_PID"
    for side in before after; do
        run "chain $side" "${SECRET[$side]}" "http://127.0.0.1:${CHAIN_PORT[$side]}/api/x" "${PID[$side]}"
    done
done

echo "forward-auth, two builds — $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores, ${LOOPS:-$(nproc)} event loops; $ROUNDS interleaved rounds of ${SECONDS_EACH}s, medians"
printf '%-48s | %9s %7s | %s\n' "wrk -t1 -c50" "r/s" "ratio" "server CPU per request"
for path in direct chain; do
    base=$(echo "${RPS[$path nginx]}" | median)
    for side in nginx floor before after; do
        [ -n "${RPS[$path $side]:-}" ] || continue
        case $side in
            nginx) label="$path: zero-cost authorizer (nginx return 200)" ;;
            floor) label="$path: SwiftNIO floor (NIOHTTP1, return 200)" ;;
            *) label="$path: apikeyd $side" ;;
        esac
        rps=$(echo "${RPS[$path $side]}" | median)
        printf '%-48s | %9s %7s | %s µs\n' "$label" "$rps" "$(ratio "$rps" "$base")" "$(echo "${CPU[$path $side]}" | median)"
    done
done
echo "(direct: wrk at /authorize/api/x, or at the nginx; chain: wrk at an nginx whose /api/ asks the authorizer"
echo " by auth_request, then proxies to a return-200 backend; CPU: the authorizer's process only)"
