#!/usr/bin/env bash
# Benchmark (not a test; figures for BENCHMARKS.md): `flags get -i LIST` against
# `curl --parallel -K`, `wget2 -i` and `aria2c -i` (also `--deferred-input`), all fetching the
# same N URLs from nginx on loopback (`return 200` bodies, every URL its own file), at the
# same concurrency; then the re-run into the full directory: curl overwriting every file,
# `flags get` skipping by its journal, and `flags get` without the journal (every file
# fetched, found unchanged, kept).
#
# Needs: nginx curl wget2 aria2c /usr/bin/time  (Debian: apt-get install -y nginx curl wget2 aria2 time)
# Usage:  crates/flags/bench/get.sh [N] [CONCURRENCY]     (default 100000 URLs, 50 connections)
#   FIRST_ONLY=1  only the first runs, each directory removed after its run (for 1M URLs,
#                 whose files would not fit in tmpfs seven times over); aria2c with --deferred-input only;
#                 then `flags get --skip-existing` over the finished list (its directory kept for it)
#   BODIES=files  nginx serves a small file from disk (a flag GIF, `sendfile`) instead of `return 200`
# Figures: wall time, URLs/s, and peak RSS (/usr/bin/time's maximum resident set size).
set -euo pipefail
cd "$(dirname "$0")/../../.."
N=${1:-100000}
C=${2:-50}
PORT=${PORT:-8091}
for tool in nginx curl wget2 aria2c /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
cargo build --release -p flags --locked -q
FLAGS=${CARGO_TARGET_DIR:-$PWD/target}/release/flags

if [[ -d /dev/shm && -w /dev/shm ]]; then WORK=$(mktemp -d -p /dev/shm); else WORK=$(mktemp -d); fi
trap 'kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/logs"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 2;
user root;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    location /r/ { return 200 "GIF89a a small flag\n"; }
    location /f/ { root $WORK/www; rewrite ^ /flag.gif break; }
    location /v/ { return 200 "GIF89a \$request_id\n"; }
  }
}
CONF
mkdir -p "$WORK/www"
# A small real file for BODIES=files: a flag from the shared data when present.
FLAG_GIF=${FLAG_GIF:-../shared/flags-data/flags/br/br.gif}
if [[ -f "$FLAG_GIF" ]]; then cp "$FLAG_GIF" "$WORK/www/flag.gif"; else head -c 2048 /dev/urandom > "$WORK/www/flag.gif"; fi
nginx -c "$WORK/nginx.conf" -p "$WORK"
if [[ ${BODIES:-} == files ]]; then BASE="http://127.0.0.1:$PORT/f"; KIND="small files ($(stat -c %s "$WORK/www/flag.gif") bytes)"; else BASE="http://127.0.0.1:$PORT/r"; KIND="return 200"; fi
until curl -sf -o /dev/null "$BASE/0"; do :; done

seq 0 $((N - 1)) | sed "s|^|$BASE/|" > "$WORK/urls.txt"
seq 0 $((N - 1)) | awk -v b="$BASE" '{ printf "url = \"%s/%s\"\noutput = \"%s\"\n", b, $1, $1 }' > "$WORK/curl.cfg"

# run NAME DIR CMD...: runs CMD in DIR, prints wall time, URLs/s, peak RSS and files.
run() {
  local name=$1 dir=$2; shift 2
  mkdir -p "$dir"
  local t0 t1
  t0=$(date +%s%N)
  (cd "$dir" && /usr/bin/time -f '%M' -o "$WORK/time" "$@" >/dev/null 2>&1) || true
  t1=$(date +%s%N)
  local ms=$(( (t1 - t0) / 1000000 ))
  printf '%-44s %8.2f s  %8.0f URLs/s  peak RSS %7d KiB  files %d\n' "$name" \
    "$(bc -l <<<"$ms/1000")" "$(bc -l <<<"$N*1000/($ms+1)")" "$(tail -1 "$WORK/time")" \
    "$(find "$dir" -type f -not -name '.flags-*' | wc -l)"
  if [[ ${FIRST_ONLY:-} ]]; then rm -rf "$dir"; fi
}

echo "== $(date -u +%F) $N URLs, $C connections, nginx ($KIND) on 127.0.0.1:$PORT, load $(cut -d' ' -f1-3 /proc/loadavg)"
run "flags get --mode threads -m $C" "$WORK/ft" "$FLAGS" get -i "$WORK/urls.txt" -m "$C" --max-per-host "$C" --dest .
run "flags get --mode async -m $C" "$WORK/fa" "$FLAGS" get --mode async -i "$WORK/urls.txt" -m "$C" --max-per-host "$C" --dest .
run "flags get --mode processes -m $C" "$WORK/fp" "$FLAGS" get --mode processes -i "$WORK/urls.txt" -m "$C" --max-per-host "$C" --dest .
run "curl --parallel --parallel-max $C -K" "$WORK/c" curl -s --parallel --parallel-immediate --parallel-max "$C" -K "$WORK/curl.cfg"
run "wget2 --max-threads=$C -i" "$WORK/w" wget2 -q --max-threads="$C" -i "$WORK/urls.txt"
run "aria2c -j $C --deferred-input -i" "$WORK/ad" aria2c -q -j "$C" --deferred-input=true -i "$WORK/urls.txt"
if [[ ${FIRST_ONLY:-} ]]; then
  echo "== --skip-existing over the finished list"
  FIRST_ONLY= run "flags get --mode async (to fill the directory)" "$WORK/fs" "$FLAGS" get --mode async -i "$WORK/urls.txt" -m "$C" --max-per-host "$C" --dest .
  rm -f "$WORK/fs/.flags-journal"
  run "flags get --skip-existing, no journal" "$WORK/fs" "$FLAGS" get -i "$WORK/urls.txt" -m "$C" --max-per-host "$C" --skip-existing --dest .
  exit 0
fi
if (( N <= 200000 )); then
  run "aria2c -j $C -i" "$WORK/a" aria2c -q -j "$C" -i "$WORK/urls.txt"
fi
echo "== re-run into the full directory"
run "curl -K (overwrites every file)" "$WORK/c" curl -s --parallel --parallel-immediate --parallel-max "$C" -K "$WORK/curl.cfg"
run "flags get (journal: nothing fetched)" "$WORK/ft" "$FLAGS" get -i "$WORK/urls.txt" -m "$C" --max-per-host "$C" --dest .
rm -f "$WORK/ft/.flags-journal"
run "flags get, no journal (unchanged, kept)" "$WORK/ft" "$FLAGS" get -i "$WORK/urls.txt" -m "$C" --max-per-host "$C" --dest .
echo "== replacing changed files (every body new: /v/ answers a request id)"
sed "s|$BASE/|http://127.0.0.1:$PORT/v/|" "$WORK/urls.txt" > "$WORK/v.txt"
sed "s|$BASE/|http://127.0.0.1:$PORT/v/|" "$WORK/curl.cfg" > "$WORK/v.cfg"
for round in first second; do
  run "curl -K, $round run" "$WORK/cv" curl -s --parallel --parallel-immediate --parallel-max "$C" -K "$WORK/v.cfg"
  rm -f "$WORK/fv/.flags-journal"
  run "flags get, $round run" "$WORK/fv" "$FLAGS" get -i "$WORK/v.txt" -m "$C" --max-per-host "$C" --dest .
done
rm -f "$WORK/ft/.flags-journal"
run "flags get --skip-existing, no journal" "$WORK/ft" "$FLAGS" get -i "$WORK/urls.txt" -m "$C" --max-per-host "$C" --skip-existing --dest .
