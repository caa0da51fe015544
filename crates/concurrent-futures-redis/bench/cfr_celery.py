import os

from celery import Celery

url = "redis+socket://" + os.environ["CFR_SOCKET"]
app = Celery("cfr", broker=url, backend=url)
app.conf.update(task_serializer="json", result_serializer="json", worker_prefetch_multiplier=64)


@app.task
def noop(x):
    return x
