#!/usr/bin/env bash
# Benchmark: `flags -a` and `flags -e` in each mode against curl, wget2 and aria2c, all
# downloading the same URLs from nginx on loopback (not a test: figures for BENCHMARKS.md).
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

# Outputs go to tmpfs when there is one, so that the disk (shared with other people's builds)
# stays out of the figures; every tool writes to the same place.
if [[ -d /dev/shm && -w /dev/shm ]]; then WORK=$(mktemp -d -p /dev/shm); else WORK=$(mktemp -d); fi
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
# On a shared machine, a raised priority (root only) for nginx and every case keeps other
# people's builds from deciding the figures; it applies to all tools alike.
NICE=()
nice -n -10 true 2>/dev/null && NICE=(nice -n -10)
"${NICE[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK"
BASE="http://127.0.0.1:$PORT/flags"
until curl -sf -o /dev/null "$BASE/br/br.gif"; do :; done

# URL lists: -a is the 194 codes of the flag set, -e every code AA..ZZ.
ALL=$(cd "$DATA" && ls -d ?? | tr a-z A-Z)
EVERY=$(for a in {A..Z}; do for b in {A..Z}; do echo "$a$b"; done; done)

# Cases run interleaved (one run of each case per round, RUNS rounds) so that load from
# elsewhere on the machine hits every case alike; each run starts in a fresh directory.
# Reports per case: median/min/max wall time (ms), median CPU time (user+sys, ms), peak RSS.
declare -a NAMES CMDS
case_add() { NAMES+=("$1"); shift; CMDS+=("$(printf '%q ' "$@")"); }

run_cases() {
  local n=${#NAMES[@]} i j
  declare -A WALL CPU RSS FILES
  for ((i = 0; i < RUNS; i++)); do
    for ((j = 0; j < n; j++)); do
      rm -rf "$WORK/out"; mkdir "$WORK/out"
      local t0 t1
      t0=$(date +%s%N)
      (cd "$WORK/out" && eval "${NICE[*]} /usr/bin/time -f '%U %S %M' -o $WORK/time ${CMDS[j]}" >/dev/null 2>&1) || true
      t1=$(date +%s%N)
      WALL[$j]+="$(( (t1 - t0) / 1000 )) "
      read -r user sys rss < <(tail -1 "$WORK/time")
      CPU[$j]+="$(bc <<<"($user + $sys) * 1000000" | cut -d. -f1) "
      (( rss > ${RSS[$j]:-0} )) && RSS[$j]=$rss
      FILES[$j]=$(find "$WORK/out" -name '*.gif' | wc -l)
    done
  done
  for ((j = 0; j < n; j++)); do
    local w c
    w=($(tr ' ' '\n' <<<"${WALL[$j]}" | grep . | sort -n))
    c=($(tr ' ' '\n' <<<"${CPU[$j]}" | grep . | sort -n))
    printf '%-30s wall median %6.1f ms (min %6.1f, max %7.1f)  cpu %6.1f ms  peak RSS %6d KiB  files %d\n' \
      "${NAMES[j]}" "$(bc -l <<<"${w[RUNS/2]}/1000")" "$(bc -l <<<"${w[0]}/1000")" \
      "$(bc -l <<<"${w[RUNS-1]}/1000")" "$(bc -l <<<"${c[RUNS/2]}/1000")" "${RSS[$j]}" "${FILES[$j]}"
  done
  NAMES=(); CMDS=()
}

for set in all every; do
  if [[ $set == all ]]; then codes=$ALL; opt=-a; else codes=$EVERY; opt=-e; fi
  : > "$WORK/urls.txt"; : > "$WORK/curl.cfg"
  for cc in $codes; do
    lc=${cc,,}
    echo "$BASE/$lc/$lc.gif" >> "$WORK/urls.txt"
    printf 'url = "%s/%s/%s.gif"\noutput = "%s.gif"\n' "$BASE" "$lc" "$lc" "$cc" >> "$WORK/curl.cfg"
  done
  echo "== $opt: $(wc -l < "$WORK/urls.txt") URLs, $RUNS interleaved rounds, nginx on 127.0.0.1:$PORT, ${NICE[*]:-no nice}, load $(cut -d' ' -f1-3 /proc/loadavg)"
  for mode in sequential threads async; do
    case_add "flags $opt --mode $mode" "$FLAGS" $opt --mode "$mode" -s "$BASE" --dest .
  done
  case_add "curl --parallel-max 30" curl -s --parallel --parallel-immediate --parallel-max 30 -K "$WORK/curl.cfg"
  case_add "wget2 --max-threads=30" wget2 -q --max-threads=30 -i "$WORK/urls.txt"
  case_add "aria2c -j 30" aria2c -q -j 30 -i "$WORK/urls.txt"
  run_cases
done
