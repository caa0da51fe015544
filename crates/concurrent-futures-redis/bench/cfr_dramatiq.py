import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RedisBroker(unix_socket_path=os.environ["CFR_SOCKET"])
broker.add_middleware(Results(backend=RedisBackend(client=broker.client)))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def noop(x):
    return x
