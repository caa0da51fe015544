"""The Python task queues of issue 16, point 8, doing what the Rust bench does: N no-op
tasks from 1 client to 2 worker processes through one Redis, end to end (submit all,
then wait for every result). Run by benches/cluster.rs with a virtual environment's
python (bench/python.sh makes it):

    python competitors.py {celery|rq|dramatiq} SOCKET N

prints one line: "<name> <N> tasks in <seconds> s = <rate> tasks/s".
"""

import os
import subprocess
import sys
import time

NAME, SOCKET, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
HERE = os.path.dirname(os.path.abspath(__file__))
os.environ["CFR_SOCKET"] = SOCKET  # read by the cfr_* modules, here and in the workers
ENV = dict(os.environ, PYTHONPATH=HERE)


def report(seconds):
    print(f"{NAME} {N} tasks in {seconds:.2f} s = {N / seconds:.0f} tasks/s", flush=True)


def workers(argv):
    """Two worker processes, as for the Rust executor."""
    return [
        subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


if NAME == "celery":
    from cfr_celery import app, noop

    procs = workers([sys.executable, "-m", "celery", "-A", "cfr_celery", "worker",
                     "--pool", "prefork", "--concurrency", "1", "--loglevel", "WARNING",
                     "--without-gossip", "--without-mingle", "--without-heartbeat"])
    try:
        noop.delay(0).get(timeout=120)  # both ready enough
        start = time.perf_counter()
        results = [noop.delay(i) for i in range(N)]
        for r in results:
            r.get(timeout=300)
        report(time.perf_counter() - start)
    finally:
        stop(procs)
elif NAME == "rq":
    from redis import Redis
    from rq import Queue
    from cfr_rq import noop

    redis = Redis(unix_socket_path=SOCKET)
    queue = Queue("cfr", connection=redis)
    queue.empty()
    start = time.perf_counter()
    jobs = [queue.enqueue(noop, i) for i in range(N)]
    # RQ's default worker forks a work horse per job, as its users run it; burst mode
    # exits once the queue is empty.
    procs = workers([sys.executable, "-m", "rq.cli", "worker", "--burst", "--url",
                     f"unix://{SOCKET}", "--quiet", "cfr"])
    for p in procs:
        p.wait(timeout=600)
    done = sum(1 for j in jobs if j.get_status(refresh=True) == "finished")
    report(time.perf_counter() - start)
    assert done == N, f"{done} of {N} finished"
elif NAME == "dramatiq":
    from cfr_dramatiq import noop

    procs = workers([sys.executable, "-m", "dramatiq", "cfr_dramatiq", "--processes", "1",
                     "--threads", "8"])
    try:
        noop.send(0).get_result(block=True, timeout=120_000)
        start = time.perf_counter()
        messages = [noop.send(i) for i in range(N)]
        for m in messages:
            m.get_result(block=True, timeout=300_000)
        report(time.perf_counter() - start)
    finally:
        stop(procs)
else:
    sys.exit(f"unknown queue {NAME}")
