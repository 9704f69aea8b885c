# Shared by the bench scripts (sourced): a work directory removed at exit with every process
# started into PIDS, waiting for a port, reading key=value fields, ratios.
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 500); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.01; done; echo "port $1 never opened" >&2; exit 1; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
ratio() { echo "scale=2; $1 / $2" | bc; }
