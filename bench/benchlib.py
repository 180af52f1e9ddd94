"""What the scheduler benchmarks share: the ``bench_orders`` table in
PostgreSQL, a ``RedisBroker`` on a Redis database of their own, the trigger
under test, and a way to reset Redis between runs.

Addresses come from ``POSTGRES_URL`` (default: database ``test`` on
127.0.0.1) and ``BENCH_REDIS_URL`` (default: Redis database 7 on
127.0.0.1).  Redis is flushed between runs with ``FLUSHDB``, so that
database must hold nothing but the benchmark's keys; database 0 is refused.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import dramatiq
import peewee as pw
import psycopg2
import redis
from dramatiq.brokers.redis import RedisBroker
from playhouse.db_url import connect

from dramatiq_triggers import RedisBackend, Trigger, TriggersMiddleware, trigger
from dramatiq_triggers.declarations import forget_all

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")

TABLE = "bench_orders"
#: Every fifth row is paid: 200,000 matching rows in a table of 1,000,000.
PAID_EVERY = 5
#: Keys of the benchmark's broker and backend, in its own Redis database.
NAMESPACE = "bench_triggers"
PAGE_SIZE = 1000

database = connect(POSTGRES_URL)


class BenchOrder(pw.Model):
    id = pw.BigIntegerField(primary_key=True)
    state = pw.TextField()
    amount = pw.IntegerField()

    class Meta:
        database = database
        table_name = TABLE


def paid() -> pw.Expression:
    """The ``where`` of every throughput run: the paid orders."""
    return BenchOrder.state == "paid"


def raw_connection() -> Any:
    """A psycopg2 connection to the benchmark database, in autocommit."""
    connection = psycopg2.connect(POSTGRES_URL)
    connection.autocommit = True
    return connection


def prepare_table(rows: int, *, rebuild: bool = False) -> float:
    """Make ``bench_orders`` hold ``rows`` rows, reusing it when it already does.

    Returns the seconds spent building it (0 when reused).
    """
    connection = raw_connection()
    try:
        with connection.cursor() as cursor:
            if not rebuild:
                cursor.execute("SELECT to_regclass(%s)", (TABLE,))
                if cursor.fetchone()[0] is not None:
                    cursor.execute(f"SELECT count(*), max(id) FROM {TABLE}")
                    if cursor.fetchone() == (rows, rows):
                        return 0.0

            started = time.perf_counter()
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cursor.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, state text NOT NULL,"
                           " amount integer NOT NULL)")
            cursor.execute(
                f"INSERT INTO {TABLE} (id, state, amount)"
                f" SELECT g, CASE WHEN g %% {PAID_EVERY} = 0 THEN 'paid' ELSE 'shipped' END,"
                " g %% 997 FROM generate_series(1, %s) AS g",
                (rows,),
            )
            # The index a user would give a trigger's filter: the scan reads it only.
            cursor.execute(f"CREATE INDEX {TABLE}_state_id ON {TABLE} (state, id)")
            cursor.execute(f"VACUUM ANALYZE {TABLE}")
            return time.perf_counter() - started
    finally:
        connection.close()


def matching_rows(rows: int) -> int:
    return rows // PAID_EVERY


def redis_client() -> redis.Redis:
    parsed = urlparse(REDIS_URL)
    if parsed.path.strip("/") in ("", "0"):
        raise SystemExit(f"BENCH_REDIS_URL={REDIS_URL} names Redis database 0; the benchmark "
                         "flushes its database, so give it one of its own (e.g. /7).")
    return redis.Redis.from_url(REDIS_URL)


def flush(client: redis.Redis) -> None:
    """Empty the benchmark's own Redis database: queues and in-flight marks."""
    client.flushdb()


@dataclass
class Setup:
    broker: RedisBroker
    client: redis.Redis
    middleware: TriggersMiddleware


def make_setup() -> Setup:
    """A ``RedisBroker`` with ``TriggersMiddleware``, set as the global broker."""
    client = redis_client()
    flush(client)
    broker = RedisBroker(client=client, namespace=NAMESPACE)
    middleware = TriggersMiddleware(run_cron=False,
                                    backend=RedisBackend(client=client, prefix=NAMESPACE))
    broker.add_middleware(middleware)
    dramatiq.set_broker(broker)
    forget_all()
    return Setup(broker, client, middleware)


def declare_trigger(where: Callable[[], pw.Expression], name: str = "ship") -> Trigger:
    """The trigger under test, on the broker of ``make_setup``."""

    def ship(order: BenchOrder) -> None:
        order.state = "shipped"
        order.save()

    ship.__name__ = name
    return trigger(BenchOrder, where=where, cron=None, stream_batch_size=PAGE_SIZE)(ship)


def queue_length(setup: Setup, queue_name: str) -> int:
    return int(setup.client.llen(f"{NAMESPACE}:{queue_name}"))


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """Yields a list that holds the elapsed seconds once the block ends."""
    elapsed: list[float] = []
    started = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed.append(time.perf_counter() - started)


def current_rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
