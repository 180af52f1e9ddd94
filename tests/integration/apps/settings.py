"""Where an integration app finds its services and names its tables and keys.

A worker process reads its ``Settings`` from environment variables
(``DT_DB``, ``DT_BROKER``, ``DT_TABLE``, ``DT_NAMESPACE``, ``DT_PREFIX``,
``DT_CRON``, and the service URLs); a test makes them with ``unique`` and
passes ``env()`` to the processes it starts, so both build the same app.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import uuid
from typing import Any

import dramatiq
import peewee as pw
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware
from playhouse.db_url import connect

from dramatiq_triggers import RedisBackend, TriggersMiddleware

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

_DATABASE_URLS = {"postgres": POSTGRES_URL, "mysql": MYSQL_URL}


@dataclasses.dataclass(frozen=True)
class Settings:
    """One app's services and the names that keep it apart from other tests.

    Attributes:
      table: the app's table; trigger queues and actor names derive from it.
      namespace: the Redis broker's namespace.
      prefix: the prefix of the coordination backend's keys and of the
        app's own counters in Redis.
      db: ``"postgres"`` or ``"mysql"``.
      broker: ``"redis"`` or ``"rabbitmq"``.
      cron: the crontab of the cron app's scheduled action.
    """

    table: str
    namespace: str
    prefix: str
    db: str = "postgres"
    broker: str = "redis"
    cron: str = "* * * * * *"

    @classmethod
    def unique(cls, topic: str, **options: Any) -> Settings:
        """Settings whose table, namespace and prefix no other test uses."""
        token = uuid.uuid4().hex[:10]
        name = f"{topic}_{token}"
        return cls(table=name, namespace=f"dt-{name}", prefix=f"dt-{name}", **options)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            table=os.environ["DT_TABLE"],
            namespace=os.environ["DT_NAMESPACE"],
            prefix=os.environ["DT_PREFIX"],
            db=os.environ.get("DT_DB", "postgres"),
            broker=os.environ.get("DT_BROKER", "redis"),
            cron=os.environ.get("DT_CRON", "* * * * * *"),
        )

    def env(self) -> dict[str, str]:
        """The environment of a process that should build these settings."""
        return {
            **os.environ,
            "DT_TABLE": self.table,
            "DT_NAMESPACE": self.namespace,
            "DT_PREFIX": self.prefix,
            "DT_DB": self.db,
            "DT_BROKER": self.broker,
            "DT_CRON": self.cron,
            "POSTGRES_URL": POSTGRES_URL,
            "MYSQL_URL": MYSQL_URL,
            "REDIS_URL": REDIS_URL,
            "RABBITMQ_URL": RABBITMQ_URL,
        }

    def database(self) -> pw.Database:
        return connect(_DATABASE_URLS[self.db])

    def redis(self) -> redis.Redis:
        return _client()

    def backend(self) -> RedisBackend:
        return RedisBackend(client=_client(), prefix=self.prefix)

    def make_broker(self, *, run_cron: bool = True) -> dramatiq.Broker:
        """The broker, with a ``Tally`` and ``TriggersMiddleware``, set as Dramatiq's."""
        broker: dramatiq.Broker
        if self.broker == "redis":
            broker = RedisBroker(url=REDIS_URL, namespace=self.namespace)
        elif self.broker == "rabbitmq":
            from dramatiq.brokers.rabbitmq import RabbitmqBroker

            broker = RabbitmqBroker(url=RABBITMQ_URL)
        else:
            raise ValueError(f"Unknown broker {self.broker!r}.")
        # Middleware "after" hooks run last-added first, so the tally counts
        # a message once TriggersMiddleware has cleared its in-flight mark.
        broker.add_middleware(Tally(self.redis(), self.prefix))
        broker.add_middleware(TriggersMiddleware(backend=self.backend(), run_cron=run_cron))
        dramatiq.set_broker(broker)
        return broker

    def processed_key(self, actor_name: str) -> str:
        return f"{self.prefix}:processed:{actor_name}"

    def processed(self, actor_name: str) -> int:
        """How many messages of the actor the workers finished (any outcome)."""
        return int(self.redis().get(self.processed_key(actor_name)) or 0)

    def forget_keys(self) -> None:
        """Delete every Redis key of this app: its broker's, backend's and counters'."""
        client = self.redis()
        for pattern in (f"{self.namespace}:*", f"{self.prefix}:*"):
            names = list(client.scan_iter(match=pattern, count=500))
            if names:
                client.delete(*names)


@functools.cache
def _client() -> redis.Redis:
    """One Redis client per process, shared by every app and test helper."""
    return redis.Redis.from_url(REDIS_URL)


class Tally(Middleware):
    """Counts the messages each actor finished, in Redis, for the tests to wait on."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *,
                              result: Any = None, exception: Any = None) -> None:
        self.client.incr(f"{self.prefix}:processed:{message.actor_name}")

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.client.incr(f"{self.prefix}:processed:{message.actor_name}")
