"""Fixtures shared by the unit and integration tests.

Unit tests get a ``StubBroker`` with ``TriggersMiddleware`` and a SQLite
database in a temporary file.  Integration tests ask for a service with
``require_service``: it skips with a reason when the service is not
reachable, and fails instead when ``CI`` is set.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import dramatiq
import peewee as pw
import pytest
from dramatiq.brokers.stub import StubBroker

from dramatiq_triggers import TriggersMiddleware
from dramatiq_triggers.declarations import forget_all

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

_ADDRESSES = {
    "postgres": (POSTGRES_URL, 5432),
    "mysql": (MYSQL_URL, 3306),
    "redis": (REDIS_URL, 6379),
    "rabbitmq": (RABBITMQ_URL, 5672),
}


def _reachable(url: str, default_port: int) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1",
                                       parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str) -> str:
    """The URL of a service, or skip (fail under CI) when it is not reachable."""
    url, port = _ADDRESSES[name]
    if not _reachable(url, port):
        message = f"{name} is not reachable at {url}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this is a failure)")
        pytest.skip(message)
    return url


@pytest.fixture(autouse=True)
def _forget_declarations() -> Iterator[None]:
    """Each test declares its own triggers on its own broker."""
    forget_all()
    yield
    forget_all()


@pytest.fixture
def middleware() -> TriggersMiddleware:
    return TriggersMiddleware(run_cron=False)


@pytest.fixture
def stub_broker(middleware: TriggersMiddleware) -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    broker.add_middleware(middleware)
    dramatiq.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def sqlite_db(tmp_path: pytest.TempPathFactory) -> Iterator[pw.SqliteDatabase]:
    # A file, not ":memory:": every thread's connection must see one database.
    database = pw.SqliteDatabase(str(tmp_path / "test.db"), pragmas={"journal_mode": "wal"},
                                 timeout=10)
    yield database
    if not database.is_closed():
        database.close()


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def one_thread_worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    """A worker with one thread: consecutive messages share it."""
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=1)
    worker.start()
    yield worker
    worker.stop()
