"""The worker: one transaction per attempt on the locked, re-checked record,
retries with backoff, on_error, the signals an action raises, time limits,
paused triggers, logging, and scheduled actions.

Most tests process messages inline with ``schedule_and_run_triggers``; the
time limit and the row lock need a real ``dramatiq.Worker`` and its threads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import peewee as pw
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import TimeLimitExceeded

from dramatiq_triggers import (
    CancelJob,
    SnoozeJob,
    Trigger,
    TriggerNoLongerApplies,
    TriggersMiddleware,
    build_trigger,
    current_job,
    in_trigger,
    run_trigger,
    scheduled_action,
    trigger,
)
from dramatiq_triggers.testing import schedule_and_run_triggers

WORKER_LOGGER = "dramatiq_triggers.worker"


class Boom(Exception):
    """The failure the actions of these tests raise."""


@pytest.fixture
def order_model(sqlite_db: pw.SqliteDatabase) -> Iterator[type[pw.Model]]:
    class Order(pw.Model):
        state = pw.CharField(default="paid")
        note = pw.CharField(default="")
        handled = pw.IntegerField(default=0)

        class Meta:
            database = sqlite_db
            table_name = "worker_order"

    sqlite_db.create_tables([Order])
    yield Order
    sqlite_db.drop_tables([Order])


def reload(record: Any) -> Any:
    return type(record).get_by_id(record.id)


def delayed_messages(broker: StubBroker, queue_name: str) -> list[Message[Any]]:
    return [Message.decode(data) for data in list(broker.queues[dq_name(queue_name)].queue)]


def above_debug(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name} {r.levelname}: {r.getMessage()}" for r in caplog.records
            if r.levelno > logging.DEBUG]


# One transaction, on the re-checked row


def test_an_action_that_succeeds_commits_its_writes(stub_broker: StubBroker,
                                                    order_model: Any) -> None:
    @trigger(order_model, where=order_model.state == "paid", cron=None)
    def ship(order: Any) -> None:
        order.state = "shipped"
        order.save()

    order = order_model.create()
    run_trigger(order, ship)
    result = schedule_and_run_triggers(ship)

    assert result.success == 1
    assert reload(order).state == "shipped"


def test_an_action_that_writes_then_raises_leaves_no_write_behind(
    stub_broker: StubBroker, order_model: Any
) -> None:
    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        order.note = "written before the failure"
        order.save()
        raise Boom("after the write")

    order = order_model.create()
    run_trigger(order, ship)
    result = schedule_and_run_triggers(ship)

    assert result.discard == 1
    assert reload(order).note == ""


def test_a_row_changed_to_not_match_before_processing_is_cancelled_quietly(
    stub_broker: StubBroker, order_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[int] = []

    @trigger(order_model, where=order_model.state == "paid", cron=None)
    def ship(order: Any) -> None:
        ran.append(order.id)

    order = order_model.create()
    run_trigger(order, ship)
    order_model.update(state="refunded").execute()

    caplog.set_level(logging.DEBUG)
    result = schedule_and_run_triggers(ship)

    assert result.cancelled == 1
    assert result.success == result.failure == result.discard == 0
    assert ran == []
    assert above_debug(caplog) == []


def test_a_scheduled_row_that_stops_matching_is_cancelled(stub_broker: StubBroker,
                                                         order_model: Any) -> None:
    ran: list[int] = []

    @trigger(order_model, where=order_model.state == "paid")
    def ship(order: Any) -> None:
        ran.append(order.id)

    order_model.create()
    schedule_and_run_triggers(ship, drain=False)
    order_model.update(state="refunded").execute()
    # The scheduler runs again (and finds nothing), then the queue drains.
    result = schedule_and_run_triggers(ship)

    assert (result.cancelled, result.success) == (1, 1)
    assert ran == []


def test_the_action_receives_action_input_and_action_arguments(stub_broker: StubBroker,
                                                             order_model: Any) -> None:
    @trigger(order_model, cron=None, action_input={"note": "static", "carrier": "ups"})
    def ship(order: Any, note: str, carrier: str) -> None:
        order.note = f"{note} {carrier}"
        order.save()

    order = order_model.create()
    run_trigger(order, ship, action_arguments={"carrier": "dhl"})
    schedule_and_run_triggers(ship)

    assert reload(order).note == "static dhl"


# Retries and backoff


def test_a_failing_action_is_retried_up_to_max_attempts(stub_broker: StubBroker,
                                                       order_model: Any) -> None:
    attempts: list[int] = []

    @trigger(order_model, cron=None, max_attempts=3, backoff=0)
    def ship(order: Any) -> None:
        job = current_job()
        assert job is not None
        attempts.append(job.attempt)
        raise Boom("always")

    run_trigger(order_model.create(), ship)
    result = schedule_and_run_triggers(ship)

    assert attempts == [1, 2, 3]
    assert (result.failure, result.discard, result.success) == (2, 1, 0)
    assert result.queues_not_drained == ()


def test_an_action_that_fails_then_succeeds_commits_on_the_later_attempt(
    stub_broker: StubBroker, order_model: Any
) -> None:
    @trigger(order_model, cron=None, max_attempts=3, backoff=0)
    def ship(order: Any) -> None:
        job = current_job()
        assert job is not None
        order.note = f"attempt {job.attempt}"
        order.save()
        if job.attempt < 2:
            raise Boom("once")

    order = order_model.create()
    run_trigger(order, ship)
    result = schedule_and_run_triggers(ship)

    assert (result.failure, result.success) == (1, 1)
    assert reload(order).note == "attempt 2"


def test_a_backoff_in_milliseconds_delays_the_retry(stub_broker: StubBroker,
                                                    order_model: Any) -> None:
    @trigger(order_model, cron=None, max_attempts=2, backoff=60_000)
    def ship(order: Any) -> None:
        raise Boom("later")

    run_trigger(order_model.create(), ship)
    before = current_millis()
    result = schedule_and_run_triggers(ship)
    after = current_millis()

    assert (result.failure, result.discard) == (1, 0)
    assert result.queues_not_drained == (ship.queue,)
    [retry] = delayed_messages(stub_broker, ship.queue)
    assert before + 60_000 <= retry.options["eta"] <= after + 60_000
    assert retry.options["retries"] == 1


def test_a_callable_backoff_gets_the_attempt_and_sets_the_delay(stub_broker: StubBroker,
                                                                 order_model: Any) -> None:
    asked: list[int] = []

    def backoff(attempt: int) -> int:
        asked.append(attempt)
        return 0 if attempt == 1 else 45_000

    @trigger(order_model, cron=None, max_attempts=3, backoff=backoff)
    def ship(order: Any) -> None:
        raise Boom("again")

    run_trigger(order_model.create(), ship)
    before = current_millis()
    result = schedule_and_run_triggers(ship)
    after = current_millis()

    assert asked == [1, 2]
    assert (result.failure, result.discard) == (2, 0)
    [retry] = delayed_messages(stub_broker, ship.queue)
    assert before + 45_000 <= retry.options["eta"] <= after + 45_000
    assert retry.options["retries"] == 2


# on_error


def test_on_error_runs_once_after_the_last_attempt_and_its_writes_persist(
    stub_broker: StubBroker, order_model: Any
) -> None:
    seen: list[tuple[int, str, str, bool]] = []

    def mark_failed(order: Any, error: BaseException) -> None:
        job = current_job()
        assert job is not None
        seen.append((job.attempt, order.note, str(error),
                     order_model._meta.database.in_transaction()))
        order.state = "failed"
        order.save()

    @trigger(order_model, where=order_model.state == "paid", cron=None, max_attempts=2,
             backoff=0, on_error=mark_failed)
    def ship(order: Any) -> None:
        order.note = "rolled back"
        order.save()
        raise Boom("no stock")

    order = order_model.create()
    run_trigger(order, ship)
    result = schedule_and_run_triggers(ship)

    # on_error saw the row as committed (the action's write undone), inside
    # a transaction of its own, on the last attempt only.
    assert seen == [(2, "", "no stock", True)]
    stored = reload(order)
    assert (stored.state, stored.note) == ("failed", "")
    assert (result.failure, result.success, result.discard) == (1, 1, 0)


def test_on_error_is_not_run_before_the_last_attempt(stub_broker: StubBroker,
                                                    order_model: Any) -> None:
    handled: list[int] = []

    @trigger(order_model, cron=None, max_attempts=2, backoff=60_000,
             on_error=lambda order, error: handled.append(order.id))
    def ship(order: Any) -> None:
        raise Boom("first attempt")

    run_trigger(order_model.create(), ship)
    result = schedule_and_run_triggers(ship)

    assert result.failure == 1
    assert handled == []


def test_on_error_is_not_run_when_the_row_no_longer_matches(stub_broker: StubBroker,
                                                           order_model: Any) -> None:
    # The where is a callable read at every step, so the row can stop
    # matching between the failed attempt and on_error.
    wanted = {"state": "paid"}
    handled: list[int] = []

    def mark_failed(order: Any, error: BaseException) -> None:
        handled.append(order.id)

    @trigger(order_model, where=lambda: order_model.state == wanted["state"], cron=None,
             on_error=mark_failed)
    def ship(order: Any) -> None:
        wanted["state"] = "something else"
        raise Boom("and the row stops matching")

    run_trigger(order_model.create(), ship)
    result = schedule_and_run_triggers(ship)

    assert handled == []
    assert result.cancelled == 1
    assert result.success == result.discard == 0


def test_on_error_fails_job_counts_the_job_as_discarded(stub_broker: StubBroker,
                                                        order_model: Any) -> None:
    def mark_failed(order: Any, error: BaseException) -> None:
        order.state = "failed"
        order.save()

    @trigger(order_model, cron=None, on_error=mark_failed, on_error_fails_job=True)
    def ship(order: Any) -> None:
        raise Boom("no stock")

    order = order_model.create()
    run_trigger(order, ship)
    result = schedule_and_run_triggers(ship)

    assert (result.discard, result.success) == (1, 0)
    assert reload(order).state == "failed"


def test_an_on_error_that_raises_discards_the_job_and_keeps_none_of_its_writes(
    stub_broker: StubBroker, order_model: Any
) -> None:
    def mark_failed(order: Any, error: BaseException) -> None:
        order.state = "failed"
        order.save()
        raise Boom("on_error broke too")

    @trigger(order_model, cron=None, on_error=mark_failed)
    def ship(order: Any) -> None:
        raise Boom("no stock")

    order = order_model.create()
    run_trigger(order, ship)
    result = schedule_and_run_triggers(ship)

    assert (result.discard, result.success) == (1, 0)
    assert reload(order).state == "paid"


# SnoozeJob, CancelJob, TriggerNoLongerApplies


def test_a_snoozed_job_is_enqueued_again_with_the_delay(stub_broker: StubBroker,
                                                        order_model: Any) -> None:
    @trigger(order_model, cron=None, max_attempts=3)
    def ship(order: Any) -> None:
        raise SnoozeJob(60)

    run_trigger(order_model.create(), ship)
    before = current_millis()
    result = schedule_and_run_triggers(ship)
    after = current_millis()

    assert (result.snoozed, result.failure, result.discard) == (1, 0, 0)
    assert result.queues_not_drained == (ship.queue,)
    [later] = delayed_messages(stub_broker, ship.queue)
    assert before + 60_000 <= later.options["eta"] <= after + 60_000
    assert later.options.get("retries", 0) == 0


def test_snoozing_does_not_use_up_an_attempt(stub_broker: StubBroker, order_model: Any) -> None:
    attempts: list[int] = []
    handled: list[int] = []

    @trigger(order_model, cron=None, max_attempts=2, backoff=0,
             on_error=lambda order, error: handled.append(order.id))
    def ship(order: Any) -> None:
        job = current_job()
        assert job is not None
        attempts.append(job.attempt)
        if len(attempts) == 2:
            raise SnoozeJob(0)
        raise Boom("fails whenever it does not snooze")

    order = order_model.create()
    run_trigger(order, ship)
    result = schedule_and_run_triggers(ship)

    # Attempt 2 snoozed and ran again as attempt 2, the last one.
    assert attempts == [1, 2, 2]
    assert handled == [order.id]
    assert (result.failure, result.snoozed, result.success) == (1, 1, 1)


def test_cancel_job_ends_the_job_as_cancelled_without_retry_or_on_error(
    stub_broker: StubBroker, order_model: Any
) -> None:
    calls: list[int] = []
    handled: list[int] = []

    @trigger(order_model, cron=None, max_attempts=3, backoff=0,
             on_error=lambda order, error: handled.append(order.id))
    def ship(order: Any) -> None:
        calls.append(order.id)
        raise CancelJob("the customer called")

    run_trigger(order_model.create(), ship)
    result = schedule_and_run_triggers(ship)

    assert (result.cancelled, result.failure, result.discard) == (1, 0, 0)
    assert len(calls) == 1
    assert handled == []


def test_trigger_no_longer_applies_is_cancelled_quietly_without_on_error(
    stub_broker: StubBroker, order_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[int] = []

    @trigger(order_model, cron=None, max_attempts=3,
             on_error=lambda order, error: handled.append(order.id))
    def ship(order: Any) -> None:
        raise TriggerNoLongerApplies()

    run_trigger(order_model.create(), ship)
    caplog.set_level(logging.DEBUG)
    result = schedule_and_run_triggers(ship)

    assert (result.cancelled, result.failure, result.discard) == (1, 0, 0)
    assert handled == []
    assert above_debug(caplog) == []


# Paused and deleted triggers


@pytest.mark.parametrize("state", ["paused", "deleted"])
def test_messages_of_a_trigger_that_is_not_active_are_cancelled(
    stub_broker: StubBroker, order_model: Any, state: str
) -> None:
    ran: list[int] = []

    @trigger(order_model, state=state)
    def ship(order: Any) -> None:
        ran.append(order.id)

    order = order_model.create()
    # A message sent while the trigger was still active.
    stub_broker.enqueue(build_trigger(order, ship))
    result = schedule_and_run_triggers(ship)

    assert (result.cancelled, result.success) == (1, 0)
    assert ran == []


# Logging


def failing_twice(model: Any, **options: Any) -> Trigger:
    @trigger(model, cron=None, max_attempts=2, backoff=0, **options)
    def ship(order: Any) -> None:
        raise Boom("broken")

    return ship


def worker_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == WORKER_LOGGER and r.levelno == level]


def test_failed_attempts_are_logged_by_default(stub_broker: StubBroker, order_model: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    ship = failing_twice(order_model)
    run_trigger(order_model.create(), ship)
    schedule_and_run_triggers(ship)

    [retried] = worker_lines(caplog, logging.WARNING)
    [last] = worker_lines(caplog, logging.ERROR)
    assert retried.exc_info is not None and isinstance(retried.exc_info[1], Boom)
    assert last.exc_info is not None and isinstance(last.exc_info[1], Boom)


def test_log_errors_false_still_logs_the_final_error(stub_broker: StubBroker,
                                                     order_model: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    ship = failing_twice(order_model, log_errors=False)
    run_trigger(order_model.create(), ship)
    schedule_and_run_triggers(ship)

    assert worker_lines(caplog, logging.WARNING) == []
    assert len(worker_lines(caplog, logging.ERROR)) == 1


def test_log_errors_and_log_final_error_false_log_no_failure(
    stub_broker: StubBroker, order_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ship = failing_twice(order_model, log_errors=False, log_final_error=False)
    run_trigger(order_model.create(), ship)
    result = schedule_and_run_triggers(ship)

    assert result.discard == 1
    assert [r for r in caplog.records
            if r.name == WORKER_LOGGER and r.levelno >= logging.WARNING] == []


def shipping(model: Any, **options: Any) -> Trigger:
    @trigger(model, cron=None, **options)
    def ship(order: Any) -> None:
        pass

    return ship


def test_routine_steps_are_logged_at_debug_only(stub_broker: StubBroker, order_model: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    ship = shipping(order_model)
    run_trigger(order_model.create(), ship)
    caplog.set_level(logging.DEBUG)
    schedule_and_run_triggers(ship)

    assert worker_lines(caplog, logging.DEBUG)
    assert worker_lines(caplog, logging.INFO) == []


def test_debug_logs_the_routine_steps_of_that_trigger_at_info(
    stub_broker: StubBroker, order_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ship = shipping(order_model, debug=True)
    run_trigger(order_model.create(), ship)
    caplog.set_level(logging.INFO)
    schedule_and_run_triggers(ship)

    messages = [r.getMessage() for r in worker_lines(caplog, logging.INFO)]
    assert any(m.startswith("Running") for m in messages)
    assert any(m.startswith("Finished") for m in messages)


@pytest.mark.parametrize("middleware",
                         [TriggersMiddleware(run_cron=False, debug_all_triggers=True)])
def test_debug_all_triggers_logs_every_trigger_at_info(
    stub_broker: StubBroker, order_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ship = shipping(order_model)
    run_trigger(order_model.create(), ship)
    caplog.set_level(logging.INFO)
    schedule_and_run_triggers(ship)

    assert any(r.getMessage().startswith("Finished") for r in worker_lines(caplog, logging.INFO))


# Scheduled actions


def test_a_scheduled_action_gets_action_input_and_last_attempt(stub_broker: StubBroker) -> None:
    calls: list[tuple[str, bool, bool]] = []

    @scheduled_action(cron="0 * * * *", action_input={"greeting": "hello"}, max_attempts=2,
                      backoff=0)
    def report(greeting: str, last_attempt: bool) -> None:
        calls.append((greeting, last_attempt, in_trigger()))
        if not last_attempt:
            raise Boom("first attempt")

    result = schedule_and_run_triggers(report)

    assert calls == [("hello", False, True), ("hello", True, True)]
    assert (result.failure, result.success) == (1, 1)


def test_a_scheduled_action_that_does_not_accept_last_attempt_is_called_without_it(
    stub_broker: StubBroker,
) -> None:
    calls: list[str] = []

    @scheduled_action(cron="0 * * * *", action_input={"greeting": "hi"})
    def report(greeting: str) -> None:
        calls.append(greeting)

    result = schedule_and_run_triggers(report)

    assert calls == ["hi"]
    assert result.success == 1


def test_a_scheduled_action_that_always_fails_is_discarded(stub_broker: StubBroker) -> None:
    @scheduled_action(cron="0 * * * *", max_attempts=3, backoff=0)
    def report() -> None:
        raise Boom("never works")

    result = schedule_and_run_triggers(report)

    assert (result.failure, result.discard) == (2, 1)


# With a real worker: time limits and the row lock


def join(broker: StubBroker, worker: dramatiq.Worker, *queue_names: str) -> None:
    for name in queue_names:
        broker.join(name, fail_fast=False, timeout=30_000)
    worker.join()


def test_an_attempt_past_its_timeout_fails_and_the_last_runs_on_error(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, order_model: Any
) -> None:
    attempts: list[int] = []
    finished: list[int] = []
    errors: list[BaseException] = []

    def mark_failed(order: Any, error: BaseException) -> None:
        errors.append(error)
        order.state = "timed out"
        order.save()

    @trigger(order_model, cron=None, timeout=100, max_attempts=2, backoff=0,
             on_error=mark_failed)
    def ship(order: Any) -> None:
        job = current_job()
        assert job is not None
        attempts.append(job.attempt)
        for _ in range(400):  # 10 seconds, in steps the time limit can interrupt.
            time.sleep(0.025)
        finished.append(job.attempt)

    order = order_model.create()
    run_trigger(order, ship)
    join(stub_broker, stub_worker, ship.queue)

    assert attempts == [1, 2]
    assert finished == []
    assert [type(error) for error in errors] == [TimeLimitExceeded]
    assert reload(order).state == "timed out"


def test_duplicate_messages_for_one_row_run_the_action_once(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, order_model: Any
) -> None:
    calls: list[int] = []
    inside = threading.Barrier(2, timeout=1)

    @trigger(order_model, where=order_model.state == "paid", cron=None)
    def ship(order: Any) -> None:
        calls.append(order.id)
        # Hold the lock until the duplicate is surely waiting for it.
        with contextlib.suppress(threading.BrokenBarrierError):
            inside.wait()
        order.state = "shipped"
        order.handled += 1
        order.save()

    order = order_model.create()
    message = build_trigger(order, ship)
    stub_broker.enqueue(message)
    stub_broker.enqueue(message.copy())
    join(stub_broker, stub_worker, ship.queue)

    assert calls == [order.id]
    assert reload(order).handled == 1
    assert stub_broker.dead_letters == []
