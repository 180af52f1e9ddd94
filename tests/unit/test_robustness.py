"""What happens around the action when things go wrong: a lock that cannot
be had, a failure after the commit, marks of messages that outlive their
time to live, default actors, odd primary keys, and the test helper's
choice of scheduled actions."""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import peewee as pw
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

from dramatiq_triggers import (
    StubBackend,
    TriggersMiddleware,
    current_actor,
    run_trigger,
    schedule,
    scheduled_action,
    trigger,
)
from dramatiq_triggers.records import mark_item
from dramatiq_triggers.testing import schedule_and_run_triggers


@pytest.fixture
def quick_db(tmp_path: Any) -> Iterator[pw.SqliteDatabase]:
    """A SQLite database that gives up waiting for its write lock quickly."""
    database = pw.SqliteDatabase(str(tmp_path / "robust.db"), timeout=0.2)
    yield database
    database.close()


@pytest.fixture
def Order(quick_db: pw.SqliteDatabase) -> type[pw.Model]:
    class Order(pw.Model):
        state = pw.CharField(default="paid")
        note = pw.CharField(default="")

        class Meta:
            database = quick_db
            table_name = "robust_order"

    quick_db.create_tables([Order])
    return Order


def delayed(broker: StubBroker, queue_name: str) -> list[Message[Any]]:
    return [Message.decode(data) for data in broker.queues[dq_name(queue_name)].queue]


def test_a_record_that_cannot_be_locked_waits_without_using_an_attempt_or_on_error(
    stub_broker: StubBroker, Order: type[pw.Model], quick_db: pw.SqliteDatabase
) -> None:
    errors: list[BaseException] = []

    @trigger(Order, where=Order.state == "paid", cron=None,
             on_error=lambda order, error: errors.append(error))
    def ship(order: pw.Model) -> None:
        order.state = "shipped"
        order.save()

    order = Order.create()
    run_trigger(order, ship)
    quick_db.close()
    # Another process holds SQLite's write lock for longer than the timeout.
    holder = sqlite3.connect(quick_db.database)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = schedule_and_run_triggers(ship)
    finally:
        holder.rollback()
        holder.close()

    assert (result.snoozed, result.failure, result.discard, result.success) == (1, 0, 0, 0)
    assert errors == []
    [waiting] = delayed(stub_broker, ship.queue)
    assert waiting.options.get("retries", 0) == 0
    assert Order.get_by_id(order.id).state == "paid"


def test_an_action_that_committed_is_not_retried_when_a_send_after_the_commit_fails(
    stub_broker: StubBroker, Order: type[pw.Model], middleware: TriggersMiddleware,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []

    @trigger(Order, where=Order.state == "paid", cron=None)
    def notify(order: pw.Model) -> None:
        pass

    @trigger(Order, where=Order.state == "paid", cron=None, max_attempts=3, backoff=0)
    def ship(order: pw.Model) -> None:
        runs.append(order.id)
        order.state = "shipped"
        order.save()
        run_trigger(order, notify)  # sent when the worker's transaction commits

    order = Order.create()
    run_trigger(order, ship)

    def broken_claim(*args: Any, **kwargs: Any) -> list[bool]:
        raise ConnectionError("the backend is down")

    monkeypatch.setattr(middleware.backend, "claim", broken_claim)
    result = schedule_and_run_triggers(ship)

    assert runs == [order.id]
    assert (result.success, result.failure, result.discard) == (1, 0, 0)
    assert Order.get_by_id(order.id).state == "shipped"
    assert any("after the commit failed" in r.getMessage() for r in caplog.records)


def test_a_trigger_once_record_is_not_run_again_when_recording_it_fails(
    stub_broker: StubBroker, Order: type[pw.Model], middleware: TriggersMiddleware,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []

    @trigger(Order, cron=None, trigger_once=True, max_attempts=3, backoff=0)
    def credit(order: pw.Model) -> None:
        runs.append(order.id)

    order = Order.create()
    run_trigger(order, credit)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the backend is down")

    monkeypatch.setattr(middleware.backend, "mark_done", broken)
    result = schedule_and_run_triggers(credit)

    assert runs == [order.id]
    assert result.success == 1


def test_a_late_message_does_not_clear_the_mark_of_a_newer_one(
    stub_broker: StubBroker, Order: type[pw.Model], middleware: TriggersMiddleware
) -> None:
    @trigger(Order, where=Order.state == "paid", cron=None)
    def ship(order: pw.Model) -> None:
        pass

    order = Order.create()
    old = run_trigger(order, ship)
    assert old is not None
    item = mark_item(order.id, None)
    # The old message's mark expired while it waited; a newer one took it.
    middleware.backend.release(ship.worker_actor_name, [item])
    stub_broker.flush_all()
    newer = run_trigger(order, ship)
    assert newer is not None

    stub_broker.flush_all()
    stub_broker.queues[ship.queue].put(old.encode())
    schedule_and_run_triggers(ship)

    assert middleware.backend.in_flight(ship.worker_actor_name, item)
    assert run_trigger(order, ship) is None


@pytest.mark.parametrize("middleware", [TriggersMiddleware(run_cron=False, in_flight_ttl=200)])
def test_a_retry_that_waits_longer_than_the_ttl_keeps_its_mark(
    stub_broker: StubBroker, Order: type[pw.Model], middleware: TriggersMiddleware
) -> None:
    @trigger(Order, where=Order.state == "paid", cron=None, max_attempts=2, backoff=60_000)
    def ship(order: pw.Model) -> None:
        raise RuntimeError("the carrier is down")

    order = Order.create()
    run_trigger(order, ship)
    result = schedule_and_run_triggers(ship)
    assert result.failure == 1
    time.sleep(0.5)

    assert middleware.backend.in_flight(ship.worker_actor_name, mark_item(order.id, None))
    assert run_trigger(order, ship) is None


class Robot:
    """A default actor that is no JSON value."""

    def __repr__(self) -> str:
        return "Robot()"


def test_a_default_actor_is_not_stored_in_the_messages_a_trigger_sends(
    stub_broker: StubBroker, Order: type[pw.Model]
) -> None:
    robot = Robot()
    seen: list[Any] = []

    @trigger(Order, where=Order.state == "paid", default_actor=robot)
    def ship(order: pw.Model) -> None:
        seen.append(current_actor())
        order.state = "shipped"
        order.save()

    Order.create()
    result = schedule_and_run_triggers(Order)

    assert (result.success, result.discard) == (2, 0)
    assert seen == [robot]


def test_binary_uuid_primary_keys_round_trip(stub_broker: StubBroker,
                                            quick_db: pw.SqliteDatabase) -> None:
    class Token(pw.Model):
        id = pw.BinaryUUIDField(primary_key=True, default=uuid.uuid4)
        state = pw.CharField(default="new")

        class Meta:
            database = quick_db
            table_name = "robust_token"

    quick_db.create_tables([Token])

    @trigger(Token, where=Token.state == "new", cron=None)
    def use(token: Token) -> None:
        token.state = "used"
        token.save()

    token = Token.create()
    run_trigger(token, use)
    result = schedule_and_run_triggers(use)

    assert result.success == 1
    assert Token.get_by_id(token.id).state == "used"


def test_scheduled_actions_named_by_model_and_name_or_in_a_list_are_run(
    stub_broker: StubBroker, Order: type[pw.Model]
) -> None:
    runs: list[str] = []

    @scheduled_action(Order, cron="0 * * * *")
    def tally() -> None:
        runs.append("tally")

    @scheduled_action(Order, cron="0 * * * *")
    def sweep() -> None:
        runs.append("sweep")

    assert schedule_and_run_triggers((Order, "tally")).success == 1
    assert schedule_and_run_triggers([sweep]).success == 1
    assert schedule_and_run_triggers(Order).success == 0
    assert runs == ["tally", "sweep"]


def test_the_default_redis_backend_keeps_the_broker_namespace(
    sqlite_db: pw.SqliteDatabase,
) -> None:
    from dramatiq.brokers.redis import RedisBroker

    from dramatiq_triggers import RedisBackend

    broker = RedisBroker(namespace="shop_staging")  # no connection is made here
    middleware = TriggersMiddleware(run_cron=False)
    broker.add_middleware(middleware)
    middleware.bind(broker)

    assert isinstance(middleware.backend, RedisBackend)
    assert middleware.backend.prefix == "shop_staging:triggers"
    assert StubBackend is not None
    broker.close()
    dramatiq.set_broker(StubBroker())


def test_a_scheduler_run_lock_is_released_only_by_its_own_message(
    stub_broker: StubBroker, Order: type[pw.Model], middleware: TriggersMiddleware
) -> None:
    @trigger(Order, where=Order.state == "paid")
    def ship(order: pw.Model) -> None:
        pass

    first = schedule(ship)
    assert first is not None
    stub_broker.flush_all()
    # The first run's mark expires; a second run is queued and holds it.
    from dramatiq_triggers.enqueue import RUN_ITEM

    middleware.backend.release(ship.scheduler_actor_name, [RUN_ITEM])
    second = schedule(ship)
    assert second is not None

    # The first message turns up after all and ends: the second keeps its mark.
    stub_broker.flush_all()
    stub_broker.queues[ship.scheduler_queue].put(first.encode())
    schedule_and_run_triggers(ship, drain=True)
    assert schedule(ship) is None
    logging.getLogger(__name__).debug("second run %s still holds the mark", second.message_id)
