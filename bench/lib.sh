# Shared by the bench scripts (sourced): a work directory removed at exit with every process
# started into PIDS, waiting for a port, reading key=value fields, medians, ratios, and the
# neutral load generator.
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 500); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.01; done; echo "port $1 never opened" >&2; exit 1; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
ratio() { echo "scale=2; $1 / $2" | bc; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# bench/loadgen.c (C, one epoll thread) as $WORK/loadgen, with protobuf-c and the generated code
# the server itself uses.
build_loadgen() {
    local cc
    cc=$(command -v cc || command -v clang)
    "$cc" -O2 -o "$WORK/loadgen" bench/loadgen.c Sources/CAPIKeysProto/apikeys/v1/authorize.pb-c.c \
        Sources/CAPIKeysProto/apikeys/v1/envelope.pb-c.c -I Sources/CAPIKeysProto/include -lprotobuf-c
}

# One loadgen run of SECONDS_EACH against PORT with KEY from 127.0.0.1, c=C, P=P: its r/s and p99
# appended to RPS["NAME C P"] and P99["NAME C P"] (associative arrays the caller declared).
measure() {
    local name=$1 port=$2 key=$3 c=$4 p=$5 line
    line=$("$WORK/loadgen" --port "$port" --proto apikeyd --key "$key" --client-address 127.0.0.1 \
        -c "$c" -P "$p" -d "$SECONDS_EACH")
    RPS["$name $c $p"]+="$(echo "$line" | field rps) "
    P99["$name $c $p"]+="$(echo "$line" | field p99_us) "
}

# nginx_conf NAME HTTP-BLOCK: a private nginx configuration (one worker), $WORK/NAME.conf, with its
# files in $WORK.
nginx_conf() {
    mkdir -p "$WORK/$1-temp"/{b,p,f,u,s}
    cat > "$WORK/$1.conf" <<CONF
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/$1-temp/b; proxy_temp_path $WORK/$1-temp/p; fastcgi_temp_path $WORK/$1-temp/f;
    uwsgi_temp_path $WORK/$1-temp/u; scgi_temp_path $WORK/$1-temp/s;
$2
}
CONF
}

# nginx_start NAME: runs nginx on $WORK/NAME.conf (nginx_conf) in the foreground of a background
# job, stopped at exit; its master's pid in NGINX_PID.
nginx_start() {
    /usr/sbin/nginx -p "$WORK" -e "$WORK/$1-error.log" -c "$WORK/$1.conf" -g "daemon off;" &
    PIDS+=($!)
    NGINX_PID=$!
}

# cpu_us PID: the CPU time (user + system, every thread) a process and its children have taken, in µs.
cpu_us() {
    local pid ticks=0
    for pid in "$1" $(pgrep -P "$1"); do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
    echo $((ticks * 1000000 / $(getconf CLK_TCK)))
}

# cpu_us_per_request PID BEFORE_US RPS: the CPU µs PID took per request since cpu_us gave
# BEFORE_US, over SECONDS_EACH seconds at RPS requests a second.
cpu_us_per_request() {
    echo "scale=1; ($(cpu_us "$1") - $2) / ($3 * $SECONDS_EACH)" | bc
}
