#!/usr/bin/env bash
# The cluster bench with the Python competitors (issue 16, point 8): makes a virtual
# environment with Celery, RQ and Dramatiq from PyPI (once), then runs
# benches/cluster.rs, which measures our executor and then each of them against the
# same redis-server. Needs python3 with venv and Debian's redis-server.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$here/../../../target}"
venv="$target/cluster-bench-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "celery[redis]" rq "dramatiq[redis]" redis
cd "$here/.."
CF_REDIS_BENCH_PYTHON="$venv/bin/python" cargo bench -p concurrent-futures-redis --bench cluster -- "$@"
