"""The interaction context: ``in_trigger()``, ``current_job()``,
``current_actor()`` and ``acting_as``, inside trigger work and out of it.

What a worker thread sets for one message must be gone before its next
one, so those tests run a real ``dramatiq.Worker`` with a single thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import peewee as pw
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage

from dramatiq_triggers import (
    Job,
    acting_as,
    current_actor,
    current_job,
    in_trigger,
    run_trigger,
    scheduled_action,
    trigger,
)
from dramatiq_triggers.testing import assert_triggered, schedule_and_run_triggers

ACTOR_OPTION = "dramatiq_triggers_actor"
ALICE = {"id": 1, "name": "alice"}


class Boom(Exception):
    """The failure the actions of these tests raise."""


@pytest.fixture
def order_model(sqlite_db: pw.SqliteDatabase) -> Iterator[type[pw.Model]]:
    class Order(pw.Model):
        state = pw.CharField(default="paid")

        class Meta:
            database = sqlite_db
            table_name = "context_order"

    sqlite_db.create_tables([Order])
    yield Order
    sqlite_db.drop_tables([Order])


def join(broker: StubBroker, worker: dramatiq.Worker, *queue_names: str) -> None:
    for name in queue_names:
        broker.join(name, fail_fast=False, timeout=30_000)
    worker.join()


def snapshot() -> dict[str, Any]:
    """What application code can ask about the interaction right now."""
    return {
        "thread": threading.get_ident(),
        "in_trigger": in_trigger(),
        "actor": current_actor(),
        "job": current_job(),
    }


# in_trigger()


def test_in_trigger_is_false_outside_trigger_work(stub_broker: StubBroker) -> None:
    assert in_trigger() is False
    assert current_job() is None
    assert current_actor() is None


def test_in_trigger_is_true_inside_the_action_and_on_error(stub_broker: StubBroker,
                                                           order_model: Any) -> None:
    seen: dict[str, bool] = {}

    def mark_failed(order: Any, error: BaseException) -> None:
        seen["on_error"] = in_trigger()

    @trigger(order_model, cron=None, on_error=mark_failed)
    def ship(order: Any) -> None:
        seen["action"] = in_trigger()
        raise Boom("so that on_error runs")

    run_trigger(order_model.create(), ship)
    schedule_and_run_triggers(ship)

    assert seen == {"action": True, "on_error": True}
    assert in_trigger() is False


def test_in_trigger_is_true_inside_the_scheduler(stub_broker: StubBroker,
                                                 order_model: Any) -> None:
    # A callable where is evaluated by the scheduler (and by the worker).
    seen: list[tuple[bool, str | None]] = []

    def paid() -> Any:
        job = current_job()
        seen.append((in_trigger(), job.kind if job is not None else None))
        return order_model.state == "paid"

    @trigger(order_model, where=paid)
    def ship(order: Any) -> None:
        pass

    seen.clear()  # The declaration called it once, to check it.
    order_model.create()
    result = schedule_and_run_triggers(ship)

    assert result.success == 2
    assert seen == [(True, "scheduler"), (True, "worker")]


def test_in_trigger_is_true_inside_a_scheduled_action(stub_broker: StubBroker) -> None:
    seen: list[dict[str, Any]] = []

    @scheduled_action(cron="0 * * * *")
    def report() -> None:
        seen.append(snapshot())

    schedule_and_run_triggers(report)

    [inside] = seen
    assert inside["in_trigger"] is True
    job = inside["job"]
    assert isinstance(job, Job)
    assert (job.trigger, job.kind, job.primary_key) == (report, "scheduled_action", None)


def test_in_trigger_is_false_in_a_plain_actor_sent_from_an_action(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, order_model: Any
) -> None:
    seen: list[dict[str, Any]] = []

    @dramatiq.actor(queue_name="context_notify")
    def notify() -> None:
        seen.append(snapshot())

    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        notify.send()

    with acting_as(ALICE):
        run_trigger(order_model.create(), ship)
    join(stub_broker, stub_worker, ship.queue, "context_notify")

    [plain] = seen
    # The actor travels on; the trigger interaction does not.
    assert (plain["in_trigger"], plain["job"], plain["actor"]) == (False, None, ALICE)


# current_job()


def test_current_job_describes_the_job_being_processed(stub_broker: StubBroker,
                                                       order_model: Any) -> None:
    seen: list[tuple[Any, ...]] = []

    def describe(where: str) -> None:
        job = current_job()
        assert job is not None
        seen.append((where, job.trigger, job.kind, job.primary_key, job.attempt,
                     job.max_attempts, job.last_attempt))

    @trigger(order_model, cron=None, max_attempts=2, backoff=0,
             on_error=lambda order, error: describe("on_error"))
    def ship(order: Any) -> None:
        describe("action")
        raise Boom("fails every time")

    order = order_model.create()
    run_trigger(order, ship)
    schedule_and_run_triggers(ship)

    assert seen == [
        ("action", ship, "worker", order.id, 1, 2, False),
        ("action", ship, "worker", order.id, 2, 2, True),
        ("on_error", ship, "worker", order.id, 2, 2, True),
    ]
    assert current_job() is None


def test_current_job_carries_the_dramatiq_message_id(stub_broker: StubBroker,
                                                     order_model: Any) -> None:
    seen: list[tuple[str | None, str | None]] = []

    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        job = current_job()
        message = CurrentMessage.get_current_message()
        seen.append((job.message_id if job else None,
                     message.message_id if message else None))

    order = order_model.create()
    run_trigger(order, ship)
    sent = assert_triggered(order, ship)
    schedule_and_run_triggers(ship)

    assert seen == [(sent.message_id, sent.message_id)]


# acting_as and current_actor()


def test_acting_as_stores_a_plain_actor_as_it_is(stub_broker: StubBroker,
                                                 order_model: Any) -> None:
    seen: list[Any] = []

    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        seen.append(current_actor())

    order = order_model.create()
    with acting_as(ALICE):
        run_trigger(order, ship)

    assert assert_triggered(order, ship).options[ACTOR_OPTION] == ALICE
    schedule_and_run_triggers(ship)
    assert seen == [ALICE]


def test_acting_as_applies_only_inside_its_block(stub_broker: StubBroker,
                                                 order_model: Any) -> None:
    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        pass

    inside, outside = order_model.create(), order_model.create()
    with acting_as(ALICE):
        run_trigger(inside, ship)
    run_trigger(outside, ship)

    assert assert_triggered(inside, ship).options[ACTOR_OPTION] == ALICE
    assert ACTOR_OPTION not in assert_triggered(outside, ship).options


def test_acting_as_none_inside_trigger_work_sends_without_an_actor(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, order_model: Any
) -> None:
    seen: list[Any] = []

    @dramatiq.actor(queue_name="context_notify")
    def notify(label: str) -> None:
        seen.append((label, current_actor()))

    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        notify.send("as alice")
        with acting_as(None):
            notify.send("as nobody")

    with acting_as(ALICE):
        run_trigger(order_model.create(), ship)
    join(stub_broker, stub_worker, ship.queue, "context_notify")

    assert sorted(seen) == [("as alice", ALICE), ("as nobody", None)]


# Nothing leaks from one message to the next on a worker thread


def test_nothing_leaks_from_a_trigger_message_to_the_next_message_on_the_thread(
    stub_broker: StubBroker, one_thread_worker: dramatiq.Worker, order_model: Any
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        seen.append(("trigger", snapshot()))

    @dramatiq.actor(queue_name="context_plain")
    def plain() -> None:
        seen.append(("plain", snapshot()))

    with acting_as(ALICE):
        run_trigger(order_model.create(), ship)
    join(stub_broker, one_thread_worker, ship.queue)
    plain.send()
    join(stub_broker, one_thread_worker, "context_plain")

    assert [kind for kind, _ in seen] == ["trigger", "plain"]
    first, second = (state for _, state in seen)
    assert first["thread"] == second["thread"]
    assert (first["in_trigger"], first["actor"]) == (True, ALICE)
    assert isinstance(first["job"], Job)
    assert (second["in_trigger"], second["actor"], second["job"]) == (False, None, None)


def test_a_failed_trigger_message_leaks_nothing_either(stub_broker: StubBroker,
                                                       one_thread_worker: dramatiq.Worker,
                                                       order_model: Any) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        seen.append(("trigger", snapshot()))
        raise Boom("fails for good")

    @dramatiq.actor(queue_name="context_plain")
    def plain() -> None:
        seen.append(("plain", snapshot()))

    with acting_as(ALICE):
        run_trigger(order_model.create(), ship)
    join(stub_broker, one_thread_worker, ship.queue)
    plain.send()
    join(stub_broker, one_thread_worker, "context_plain")

    assert [kind for kind, _ in seen] == ["trigger", "plain"]
    first, second = (state for _, state in seen)
    assert first["thread"] == second["thread"]
    assert (second["in_trigger"], second["actor"], second["job"]) == (False, None, None)
    assert len(stub_broker.dead_letters) == 1


def test_the_actor_of_one_trigger_message_does_not_reach_the_next(
    stub_broker: StubBroker, one_thread_worker: dramatiq.Worker, order_model: Any
) -> None:
    seen: list[dict[str, Any]] = []

    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        seen.append(snapshot())

    with acting_as(ALICE):
        run_trigger(order_model.create(), ship)
    join(stub_broker, one_thread_worker, ship.queue)
    run_trigger(order_model.create(), ship)
    join(stub_broker, one_thread_worker, ship.queue)

    assert [s["actor"] for s in seen] == [ALICE, None]
    assert seen[0]["thread"] == seen[1]["thread"]
