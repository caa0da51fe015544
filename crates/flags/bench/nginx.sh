#!/usr/bin/env bash
# Benchmark: `flags -a` and `flags -e` in each mode against curl, wget2 and aria2c, all
# downloading the same URLs from nginx on loopback. Prints one line per tool and case:
# median wall time of RUNS runs (ms), min-max, and the largest peak RSS (KiB, /usr/bin/time).
#
# Needs: nginx curl wget2 aria2c /usr/bin/time  (Debian: apt-get install -y nginx curl wget2 aria2 time)
# Usage:  crates/flags/bench/nginx.sh [FLAGS_DIR] [RUNS]
#   FLAGS_DIR  the flag set to serve (flags/<cc>/<cc>.gif), default ../shared/flags-data/flags
#   RUNS       runs per case, default 15
set -euo pipefail
cd "$(dirname "$0")/../../.."
DATA=$(realpath "${1:-../shared/flags-data/flags}")
RUNS=${2:-15}
PORT=${PORT:-8089}
for tool in nginx curl wget2 aria2c /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
cargo build --release -p flags --locked -q
FLAGS=$PWD/target/release/flags

WORK=$(mktemp -d)
trap 'kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/www" "$WORK/logs"
ln -s "$DATA" "$WORK/www/flags"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 2;
user root;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    root $WORK/www;
  }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK"
BASE="http://127.0.0.1:$PORT/flags"
until curl -sf -o /dev/null "$BASE/br/br.gif"; do :; done

# URL lists: -a is the 194 codes of the flag set, -e every code AA..ZZ.
ALL=$(cd "$DATA" && ls -d ?? | tr a-z A-Z)
EVERY=$(for a in {A..Z}; do for b in {A..Z}; do echo "$a$b"; done; done)

# run NAME CMD...: runs CMD RUNS times in a fresh directory, prints median/min/max wall ms and max RSS.
run() {
  local name=$1; shift
  local times=() rss=0
  for ((i = 0; i < RUNS; i++)); do
    rm -rf "$WORK/out"; mkdir "$WORK/out"
    local t0 t1
    t0=$(date +%s%N)
    (cd "$WORK/out" && /usr/bin/time -f %M -o "$WORK/rss" "$@" >/dev/null 2>&1) || true
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000 )))
    local r; r=$(tail -1 "$WORK/rss"); (( r > rss )) && rss=$r
  done
  local files; files=$(find "$WORK/out" -name '*.gif' | wc -l)
  IFS=$'\n' sorted=($(sort -n <<<"${times[*]}")); unset IFS
  printf '%-34s median %7.1f ms  (min %7.1f, max %7.1f)  peak RSS %7d KiB  files %d\n' \
    "$name" "$(bc -l <<<"${sorted[RUNS/2]}/1000")" "$(bc -l <<<"${sorted[0]}/1000")" \
    "$(bc -l <<<"${sorted[RUNS-1]}/1000")" "$rss" "$files"
}

for set in all every; do
  if [[ $set == all ]]; then codes=$ALL; opt=-a; else codes=$EVERY; opt=-e; fi
  : > "$WORK/urls.txt"; : > "$WORK/curl.cfg"
  for cc in $codes; do
    lc=${cc,,}
    echo "$BASE/$lc/$lc.gif" >> "$WORK/urls.txt"
    printf 'url = "%s/%s/%s.gif"\noutput = "%s.gif"\n' "$BASE" "$lc" "$lc" "$cc" >> "$WORK/curl.cfg"
  done
  echo "== $opt: $(wc -l < "$WORK/urls.txt") URLs, $RUNS runs each, nginx on 127.0.0.1:$PORT"
  for mode in sequential threads async; do
    run "flags $opt --mode $mode" "$FLAGS" $opt --mode "$mode" -s "$BASE" --dest .
  done
  run "curl --parallel-max 30" curl -s --fail --parallel --parallel-immediate --parallel-max 30 -K "$WORK/curl.cfg"
  run "wget2 --max-threads=30" wget2 -q --max-threads=30 -i "$WORK/urls.txt"
  run "aria2c -j 30" aria2c -q -j 30 -i "$WORK/urls.txt"
done
