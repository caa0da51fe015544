#!/usr/bin/env bash
# Benchmarks of the test server (issue 3); figures go in crates/slow-server/BENCHMARKS.md.
# Not a test and not run by CI: it needs wrk, nginx and the flag files.
#
#   apt-get install -y wrk nginx
#   crates/slow-server/bench.sh [FLAGS_DIR]        # default: ../shared/flags-data/flags
#
# (a) Throughput: requests/s for the 194 small GIFs with keep-alive, from wrk, against nginx and
#     against `flags serve --dir FLAGS_DIR` (and the built-in set) in the same run, ROUNDS
#     rounds interleaved; the median of each and the ratio to nginx are printed.
# (b) Concurrency: `flags serve` with a 1 s delay, HOLD connections held open at once, one GET on
#     each released at the same moment (examples/hold.rs); the time until the last answer and
#     the server's peak resident memory (VmHWM).
#
# Environment: DURATION (s per wrk run, 10), CONNS (wrk connections, 64), THREADS (wrk threads,
# 2), ROUNDS (3), HOLD (10000), HOLD_ROUNDS (3 bursts), PORT_BASE (18600: uses
# PORT_BASE..PORT_BASE+3).
set -euo pipefail
cd "$(dirname "$0")/../.."

FLAGS_DIR=$(realpath "${1:-../shared/flags-data/flags}")
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
HOLD=${HOLD:-10000}
HOLD_ROUNDS=${HOLD_ROUNDS:-3}
PORT_BASE=${PORT_BASE:-18600}
NGINX_PORT=$PORT_BASE
DIR_PORT=$((PORT_BASE + 1))
BUILTIN_PORT=$((PORT_BASE + 2))
HOLD_PORT=$((PORT_BASE + 3))

for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install -y wrk nginx)" >&2; exit 1; }
done
[ -d "$FLAGS_DIR/br" ] || { echo "error: no flag files in $FLAGS_DIR" >&2; exit 1; }
# 10,000 held connections need 10,000 descriptors in the server and in the client: take the
# hard limit (raising it needs privileges this script does not assume).
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((HOLD + 100)) ]; then
  echo "error: ulimit -n is $(ulimit -n); $HOLD connections need more (raise the hard limit)" >&2
  exit 1
fi

cargo build --release -p flags --bin flags -p slow-server --example hold
FLAGS=target/release/flags
HOLD_CLIENT=target/release/examples/hold

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Waits until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "error: nothing listens on port $1" >&2
  exit 1
}

# --- servers ---------------------------------------------------------------------------------
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 100000000;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  types { image/gif gif; application/json json; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /flags/ { alias $FLAGS_DIR/; }
  }
}
CONF
nginx -c "$tmp/nginx.conf" -p "$tmp/nginx" -e "$tmp/nginx/error.log" &
pids+=($!)
"$FLAGS" serve --port "$DIR_PORT" --dir "$FLAGS_DIR" >/dev/null 2>&1 &
pids+=($!)
"$FLAGS" serve --port "$BUILTIN_PORT" >/dev/null 2>&1 &
pids+=($!)
wait_port "$NGINX_PORT"; wait_port "$DIR_PORT"; wait_port "$BUILTIN_PORT"

# wrk cycles through the 194 flag paths.
ls "$FLAGS_DIR" >"$tmp/codes"
cat >"$tmp/flags.lua" <<LUA
local paths = {}
for cc in io.lines("$tmp/codes") do
  paths[#paths + 1] = "/flags/" .. cc .. "/" .. cc .. ".gif"
end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
LUA

rps() { # port -> requests/s
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s "$tmp/flags.lua" "http://127.0.0.1:$1" \
    | awk '/^Requests\/sec/ { print $2 } /Non-2xx/ { print "error: " $0 > "/dev/stderr" }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

echo "== (a) keep-alive throughput: wrk -t$THREADS -c$CONNS -d${DURATION}s over the 194 GIFs, $ROUNDS rounds"
echo "   machine: $(nproc) CPUs, $(uname -r); nginx $(nginx -v 2>&1 | sed 's/.*\///'), worker_processes auto"
: >"$tmp/nginx.rps"; : >"$tmp/dir.rps"; : >"$tmp/builtin.rps"
for round in $(seq "$ROUNDS"); do
  n=$(rps "$NGINX_PORT"); d=$(rps "$DIR_PORT"); b=$(rps "$BUILTIN_PORT")
  echo "   round $round: nginx $n req/s, flags serve --dir $d req/s, flags serve (built-in) $b req/s"
  echo "$n" >>"$tmp/nginx.rps"; echo "$d" >>"$tmp/dir.rps"; echo "$b" >>"$tmp/builtin.rps"
done
n=$(median <"$tmp/nginx.rps"); d=$(median <"$tmp/dir.rps"); b=$(median <"$tmp/builtin.rps")
echo "   median: nginx $n, --dir $d ($(awk -v a="$d" -v b="$n" 'BEGIN { printf "%.2f", a / b }')x nginx)," \
  "built-in $b ($(awk -v a="$b" -v b="$n" 'BEGIN { printf "%.2f", a / b }')x nginx)"
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

# --- (b) --------------------------------------------------------------------------------------
echo "== (b) $HOLD connections held at once against flags serve --min-delay 1 --max-delay 1"
"$FLAGS" serve --port "$HOLD_PORT" --min-delay 1 --max-delay 1 >/dev/null 2>&1 &
server=$!
pids+=("$server")
wait_port "$HOLD_PORT"
echo "   server resident memory before: $(awk '/VmRSS/ { print $2 / 1024 " MiB" }' "/proc/$server/status")"
# The machine settles after the wrk runs first; then HOLD_ROUNDS bursts on the same server.
sleep 5
for round in $(seq "$HOLD_ROUNDS"); do
  "$HOLD_CLIENT" "127.0.0.1:$HOLD_PORT" "$HOLD" | sed "s/^/   burst $round: /"
  echo "   server peak resident memory (VmHWM) after burst $round: $(awk '/VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$server/status")"
done
kill -INT "$server"
wait "$server" && echo "   server stopped cleanly on SIGINT"
pids=()
