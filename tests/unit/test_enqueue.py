"""Enqueueing trigger work: ``run_trigger``, ``run_triggers``,
``build_trigger`` and ``schedule``; in-flight marks, ``trigger_once``,
sending after commit, and the round trips of a bulk enqueue on Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import dramatiq
import peewee as pw
import pytest
import redis
from conftest import require_service
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name

from dramatiq_triggers import (
    CancelJob,
    RedisBackend,
    Trigger,
    TriggersMiddleware,
    acting_as,
    build_trigger,
    current_actor,
    run_trigger,
    run_triggers,
    schedule,
    scheduled_action,
    trigger,
)
from dramatiq_triggers.middleware import middleware_of
from dramatiq_triggers.records import mark_item
from dramatiq_triggers.testing import (
    assert_triggered,
    refute_triggered,
    schedule_and_run_triggers,
    wait_for,
)


class Order(pw.Model):
    state = pw.CharField(default="paid")
    note = pw.CharField(default="")

    class Meta:
        table_name = "enq_order"


class Customer(pw.Model):
    name = pw.CharField(default="Ada")

    class Meta:
        table_name = "enq_customer"


MODELS = [Order, Customer]


@pytest.fixture
def db(sqlite_db: pw.SqliteDatabase) -> Iterator[pw.SqliteDatabase]:
    sqlite_db.bind(MODELS)
    sqlite_db.create_tables(MODELS)
    yield sqlite_db
    sqlite_db.drop_tables(MODELS)


@pytest.fixture
def calls() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def ship(db: pw.SqliteDatabase, stub_broker: StubBroker, calls: list[dict[str, Any]]) -> Trigger:
    """A trigger with no cron: only ``run_trigger`` enqueues it."""

    def ship(order: Order, speed: str = "standard") -> None:
        calls.append({"order": order.id, "speed": speed, "actor": current_actor()})
        order.state = "shipped"
        order.save()

    return trigger(Order, where=Order.state == "paid", cron=None)(ship)


def queued(broker: StubBroker, queue_name: str) -> list[Message[Any]]:
    return [Message.decode(data) for data in list(broker.queues[queue_name].queue)]


def in_flight(declared: Trigger, order: Order, arguments: dict[str, Any] | None = None) -> bool:
    backend = middleware_of(declared.worker_actor.broker).backend
    return backend.in_flight(declared.worker_actor_name, mark_item(order.id, arguments))


# run_trigger and build_trigger


def test_run_trigger_enqueues_one_worker_message_for_the_record(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    order = Order.create()

    message = run_trigger(order, ship)

    assert message is not None
    [sent] = queued(stub_broker, "enq_order_ship")
    assert sent.message_id == message.message_id
    assert (sent.actor_name, sent.args) == (ship.worker_actor_name, (order.id,))
    assert_triggered(order, ship)


def test_run_trigger_accepts_the_triggers_name(ship: Trigger, stub_broker: StubBroker) -> None:
    order = Order.create()

    run_trigger(order, "ship")
    result = schedule_and_run_triggers(Order)

    assert result.success == 1
    assert Order.get_by_id(order.id).state == "shipped"


def test_run_trigger_with_an_unknown_name_lists_the_models_triggers(ship: Trigger) -> None:
    with pytest.raises(LookupError, match=r"no trigger named 'send'.*ship"):
        run_trigger(Order.create(), "send")


def test_run_trigger_refuses_a_record_of_another_model(ship: Trigger) -> None:
    with pytest.raises(ValueError, match="not a trigger of Customer"):
        run_trigger(Customer.create(), ship)


def test_run_trigger_refuses_a_record_that_is_not_saved_yet(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    with pytest.raises(ValueError, match="save it"):
        run_trigger(Order(), ship)

    assert queued(stub_broker, "enq_order_ship") == []


def test_action_arguments_reach_the_action_as_keyword_arguments(
    ship: Trigger, calls: list[dict[str, Any]]
) -> None:
    order = Order.create()

    run_trigger(order, ship, action_arguments={"speed": "express"})
    schedule_and_run_triggers(ship)

    assert [call["speed"] for call in calls] == ["express"]


def test_action_arguments_override_the_static_action_input(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    seen: list[tuple[str, str]] = []

    def wrap(order: Order, *, paper: str, ribbon: str) -> None:
        seen.append((paper, ribbon))

    declared = trigger(Order, cron=None, action_input={"paper": "brown", "ribbon": "red"})(wrap)
    run_trigger(Order.create(), declared, action_arguments={"ribbon": "gold"})
    schedule_and_run_triggers(declared)

    assert seen == [("brown", "gold")]


def test_the_actor_given_to_run_trigger_is_the_current_actor_in_the_action(
    ship: Trigger, calls: list[dict[str, Any]]
) -> None:
    run_trigger(Order.create(), ship, actor={"user": 7})
    schedule_and_run_triggers(ship)

    assert calls[0]["actor"] == {"user": 7}


def test_run_trigger_inside_acting_as_carries_that_actor(
    ship: Trigger, calls: list[dict[str, Any]]
) -> None:
    with acting_as("support-agent"):
        run_trigger(Order.create(), ship)
    schedule_and_run_triggers(ship)

    assert calls[0]["actor"] == "support-agent"


def test_a_delayed_message_lands_in_the_delay_queue(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    order = Order.create()
    before = current_millis()

    run_trigger(order, ship, delay=60_000)

    assert queued(stub_broker, "enq_order_ship") == []
    [delayed] = queued(stub_broker, dq_name("enq_order_ship"))
    assert delayed.args == (order.id,)
    assert delayed.options["eta"] >= before + 60_000


def test_a_delayed_message_is_not_run_before_it_is_due(ship: Trigger) -> None:
    order = Order.create()

    run_trigger(order, ship, delay=60_000)
    result = schedule_and_run_triggers(ship)

    assert result.success == 0
    assert result.queues_not_drained == ("enq_order_ship",)
    assert Order.get_by_id(order.id).state == "paid"


def test_build_trigger_returns_the_message_without_sending_it(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    order = Order.create()

    message = build_trigger(order, ship, action_arguments={"speed": "express"},
                            actor={"user": 1})

    assert isinstance(message, Message)
    assert message.queue_name == "enq_order_ship"
    assert message.actor_name == ship.worker_actor_name
    assert message.args == (order.id,)
    assert queued(stub_broker, "enq_order_ship") == []
    assert not in_flight(ship, order, {"speed": "express"})


def test_a_built_message_runs_the_action_when_the_user_sends_it(
    ship: Trigger, stub_broker: StubBroker, calls: list[dict[str, Any]]
) -> None:
    order = Order.create()

    stub_broker.enqueue(build_trigger(order, ship, action_arguments={"speed": "express"},
                                      actor={"user": 1}))
    schedule_and_run_triggers(ship)

    assert calls == [{"order": order.id, "speed": "express", "actor": {"user": 1}}]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"colour": "red"}, "cannot take the arguments"),
        ({"order": 3}, "cannot take the arguments"),
        ({"speed": object()}, "JSON-serializable"),
        ({"speed": {1, 2}}, "JSON-serializable"),
        (["speed", "express"], "must be a dict"),
    ],
    ids=["unknown keyword", "the record's own parameter", "an object", "a set", "a list"],
)
def test_action_arguments_that_do_not_fit_raise_type_error_and_send_nothing(
    ship: Trigger, stub_broker: StubBroker, arguments: Any, problem: str
) -> None:
    order = Order.create()

    with pytest.raises(TypeError, match=problem):
        run_trigger(order, ship, action_arguments=arguments)
    with pytest.raises(TypeError, match=problem):
        run_triggers([order], ship, action_arguments=arguments)

    assert queued(stub_broker, "enq_order_ship") == []
    assert run_trigger(order, ship) is not None


# run_triggers


def test_run_triggers_enqueues_one_message_per_record_and_marks_each_in_flight(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    orders = [Order.create() for _ in range(5)]

    sent = run_triggers(orders, ship)

    assert [message.args[0] for message in sent] == [order.id for order in orders]
    assert [m.args[0] for m in queued(stub_broker, "enq_order_ship")] == [o.id for o in orders]
    assert all(in_flight(ship, order) for order in orders)


def test_run_triggers_pages_by_the_stream_batch_size(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    def ship(order: Order) -> None:
        pass

    declared = trigger(Order, cron=None, stream_batch_size=2)(ship)
    orders = [Order.create() for _ in range(5)]

    sent = run_triggers(orders, declared)

    assert len(sent) == 5
    assert len(queued(stub_broker, declared.queue)) == 5


def test_run_triggers_skips_records_already_in_flight(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    orders = [Order.create() for _ in range(4)]
    run_trigger(orders[1], ship)

    sent = run_triggers(orders, ship)
    again = run_triggers(orders, ship)

    assert [message.args[0] for message in sent] == [orders[0].id, orders[2].id, orders[3].id]
    assert again == []
    assert len(queued(stub_broker, "enq_order_ship")) == 4


def test_run_triggers_by_name_with_arguments_and_delay(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    orders = [Order.create() for _ in range(3)]

    sent = run_triggers(orders, "ship", action_arguments={"speed": "express"}, delay=5_000)

    assert len(sent) == 3
    assert queued(stub_broker, "enq_order_ship") == []
    delayed = queued(stub_broker, dq_name("enq_order_ship"))
    assert [m.kwargs for m in delayed] == [{"arguments": {"speed": "express"}}] * 3


def test_run_triggers_of_no_records_sends_nothing(ship: Trigger) -> None:
    assert run_triggers([], ship) == []


def test_run_triggers_processes_every_record(ship: Trigger) -> None:
    orders = [Order.create() for _ in range(6)]

    run_triggers(orders, ship)
    result = schedule_and_run_triggers(ship)

    assert result.success == 6
    assert Order.select().where(Order.state == "shipped").count() == 6


# Enqueue after commit


def test_run_trigger_inside_a_transaction_sends_nothing_until_commit(
    ship: Trigger, stub_broker: StubBroker, db: pw.SqliteDatabase
) -> None:
    with db.atomic():
        order = Order.create()
        run_trigger(order, ship)
        assert queued(stub_broker, "enq_order_ship") == []
        assert not in_flight(ship, order)

    assert [m.args for m in queued(stub_broker, "enq_order_ship")] == [(order.id,)]
    assert in_flight(ship, order)


def test_run_trigger_in_a_transaction_that_rolls_back_sends_nothing(
    ship: Trigger, stub_broker: StubBroker, db: pw.SqliteDatabase
) -> None:
    order = Order.create()

    with pytest.raises(RuntimeError), db.atomic():
        run_trigger(order, ship)
        raise RuntimeError("payment declined")

    assert queued(stub_broker, "enq_order_ship") == []
    assert not in_flight(ship, order)
    assert run_trigger(order, ship) is not None


def test_an_explicit_rollback_discards_the_message(
    ship: Trigger, stub_broker: StubBroker, db: pw.SqliteDatabase
) -> None:
    order = Order.create()

    with db.atomic() as transaction:
        run_trigger(order, ship)
        transaction.rollback()

    assert queued(stub_broker, "enq_order_ship") == []


def test_run_triggers_inside_a_transaction_waits_for_the_commit(
    ship: Trigger, stub_broker: StubBroker, db: pw.SqliteDatabase
) -> None:
    with db.atomic():
        orders = [Order.create() for _ in range(3)]
        built = run_triggers(orders, ship)
        assert queued(stub_broker, "enq_order_ship") == []

    assert len(built) == 3
    assert len(queued(stub_broker, "enq_order_ship")) == 3


def test_the_worker_sees_the_committed_row(
    ship: Trigger, db: pw.SqliteDatabase, calls: list[dict[str, Any]]
) -> None:
    with db.atomic():
        order = Order.create()
        run_trigger(order, ship)

    result = schedule_and_run_triggers(ship)

    assert result.success == 1
    assert [call["order"] for call in calls] == [order.id]


def test_a_message_from_a_rolled_back_savepoint_is_cancelled_by_the_worker(
    ship: Trigger, db: pw.SqliteDatabase, calls: list[dict[str, Any]]
) -> None:
    # peewee does not track savepoints, so the message of a rolled-back inner
    # atomic() still goes out when the outer transaction commits; the worker
    # does not find the row and cancels the job without running the action.
    with db.atomic(), db.atomic() as savepoint:
        order = Order.create()
        run_trigger(order, ship)
        savepoint.rollback()

    result = schedule_and_run_triggers(ship)

    assert Order.select().count() == 0
    assert (result.success, result.cancelled) == (0, 1)
    assert calls == []


# In-flight marks


def test_a_second_run_trigger_for_the_same_record_is_skipped_while_one_is_queued(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    order = Order.create()

    first = run_trigger(order, ship)
    second = run_trigger(order, ship)

    assert first is not None
    assert second is None
    assert len(queued(stub_broker, "enq_order_ship")) == 1


def test_the_same_arguments_in_another_order_are_deduplicated(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    def wrap(order: Order, *, paper: str = "brown", ribbon: str = "red") -> None:
        pass

    declared = trigger(Order, cron=None)(wrap)
    order = Order.create()

    first = run_trigger(order, declared, action_arguments={"paper": "a", "ribbon": "b"})
    second = run_trigger(order, declared, action_arguments={"ribbon": "b", "paper": "a"})

    assert first is not None and second is None


def test_different_action_arguments_are_not_deduplicated(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    order = Order.create()

    plain = run_trigger(order, ship)
    express = run_trigger(order, ship, action_arguments={"speed": "express"})
    overnight = run_trigger(order, ship, action_arguments={"speed": "overnight"})

    assert None not in (plain, express, overnight)
    assert len(queued(stub_broker, "enq_order_ship")) == 3


def test_the_mark_is_cleared_after_a_successful_job(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    order = Order.create()
    run_trigger(order, ship)

    result = schedule_and_run_triggers(ship)
    Order.update(state="paid").execute()

    assert result.success == 1
    assert not in_flight(ship, order)
    assert run_trigger(order, ship) is not None
    assert len(queued(stub_broker, "enq_order_ship")) == 1


def test_the_mark_is_cleared_after_a_job_cancelled_because_the_row_no_longer_matches(
    ship: Trigger, stub_broker: StubBroker
) -> None:
    order = Order.create()
    run_trigger(order, ship)
    Order.update(state="on hold").execute()

    result = schedule_and_run_triggers(ship)

    assert result.cancelled == 1
    assert run_trigger(order, ship) is not None


def test_the_mark_is_cleared_after_an_action_cancels_its_job(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    def refuse(order: Order) -> None:
        raise CancelJob("out of stock")

    declared = trigger(Order, cron=None)(refuse)
    order = Order.create()
    run_trigger(order, declared)

    result = schedule_and_run_triggers(declared)

    assert result.cancelled == 1
    assert run_trigger(order, declared) is not None


def test_the_mark_is_cleared_after_the_last_attempt_fails(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    def explode(order: Order) -> None:
        raise RuntimeError("carrier unreachable")

    declared = trigger(Order, cron=None, max_attempts=2, backoff=0, log_errors=False,
                       log_final_error=False)(explode)
    order = Order.create()
    run_trigger(order, declared)

    result = schedule_and_run_triggers(declared)

    assert (result.failure, result.discard) == (1, 1)
    assert not in_flight(declared, order)
    assert run_trigger(order, declared) is not None


def test_the_mark_is_kept_while_a_retry_is_pending(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    def explode(order: Order) -> None:
        raise RuntimeError("carrier unreachable")

    declared = trigger(Order, cron=None, max_attempts=3, backoff=3_600_000,
                       log_errors=False)(explode)
    order = Order.create()
    run_trigger(order, declared)

    result = schedule_and_run_triggers(declared)

    assert result.failure == 1
    assert result.queues_not_drained == (declared.queue,)
    assert run_trigger(order, declared) is None


# trigger_once


def test_trigger_once_never_enqueues_a_record_again_after_a_success(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    done: list[int] = []

    def welcome(customer: Customer) -> None:
        done.append(customer.id)

    declared = trigger(Customer, trigger_once=True)(welcome)
    ada = Customer.create()

    first = schedule_and_run_triggers(Customer)
    again = run_trigger(ada, declared)
    scheduled_again = schedule_and_run_triggers(Customer)

    assert first.success == 2  # the scheduler and the worker
    assert again is None
    assert scheduled_again.success == 1  # the scheduler alone
    assert done == [ada.id]
    refute_triggered(ada, declared)


def test_trigger_once_still_enqueues_records_not_processed_yet(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    done: list[int] = []

    def welcome(customer: Customer) -> None:
        done.append(customer.id)

    declared = trigger(Customer, trigger_once=True, cron=None)(welcome)
    ada, grace = Customer.create(), Customer.create(name="Grace")

    run_trigger(ada, declared)
    schedule_and_run_triggers(declared)
    sent = run_triggers([ada, grace], declared)

    assert [message.args[0] for message in sent] == [grace.id]


def test_trigger_once_allows_another_try_after_a_failure(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    def welcome(customer: Customer) -> None:
        raise RuntimeError("mail server down")

    declared = trigger(Customer, trigger_once=True, cron=None, log_errors=False,
                       log_final_error=False)(welcome)
    ada = Customer.create()
    run_trigger(ada, declared)

    result = schedule_and_run_triggers(declared)

    assert result.discard == 1
    assert run_trigger(ada, declared) is not None


# schedule


def test_schedule_enqueues_the_scheduler_by_model_and_name(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    def ship(order: Order) -> None:
        pass

    declared = trigger(Order, scheduler_queue="enq_schedulers")(ship)

    message = schedule(Order, "ship")

    assert message is not None
    [sent] = queued(stub_broker, "enq_schedulers")
    assert sent.actor_name == declared.scheduler_actor_name


def test_only_one_scheduler_run_is_in_flight_at_a_time(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    def ship(order: Order) -> None:
        pass

    declared = trigger(Order)(ship)

    first = schedule(declared)
    second = schedule(declared)
    schedule_and_run_triggers(declared, drain=True)
    after_the_run = schedule(declared)

    assert first is not None
    assert second is None
    assert after_the_run is not None


def test_schedule_carries_the_actor(db: pw.SqliteDatabase, stub_broker: StubBroker) -> None:
    def ship(order: Order) -> None:
        pass

    declared = trigger(Order)(ship)

    message = schedule(declared, actor={"user": "ops"})

    assert message is not None
    assert json.dumps({"user": "ops"}) in json.dumps(message.options)


def test_schedule_runs_a_scheduled_action_by_model_and_name(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    def nightly_report() -> None:
        pass

    declared = scheduled_action(Order, cron="0 2 * * *")(nightly_report)

    message = schedule(Order, "nightly_report")

    assert message is not None and message.actor_name == declared.actor_name
    assert len(queued(stub_broker, declared.queue)) == 1


def test_schedule_with_a_trigger_and_a_name_is_a_type_error(ship: Trigger) -> None:
    with pytest.raises(TypeError):
        schedule(ship, "ship")  # type: ignore[call-overload, arg-type]


def test_schedule_of_an_unknown_name_is_a_lookup_error(ship: Trigger) -> None:
    with pytest.raises(LookupError):
        schedule(Order, "nothing")


# A real RedisBroker

NAMESPACE = "dt_test_enqueue"
MARKS_PREFIX = "dt_test_enqueue_marks"


def delete_own_keys(client: redis.Redis) -> None:
    for pattern in (f"{NAMESPACE}:*", f"{MARKS_PREFIX}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def redis_broker(db: pw.SqliteDatabase) -> Iterator[RedisBroker]:
    url = require_service("redis")
    broker = RedisBroker(url=url, namespace=NAMESPACE)
    delete_own_keys(broker.client)
    backend = RedisBackend(client=broker.client, prefix=MARKS_PREFIX)
    broker.add_middleware(TriggersMiddleware(run_cron=False, backend=backend))
    dramatiq.set_broker(broker)
    yield broker
    delete_own_keys(broker.client)
    broker.close()


def redis_messages(broker: RedisBroker, queue_name: str) -> list[Message[Any]]:
    stored = broker.client.hvals(f"{NAMESPACE}:{queue_name}.msgs")
    return [Message.decode(data) for data in stored]


class Counter:
    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def pipeline_executes(monkeypatch: pytest.MonkeyPatch) -> Counter:
    counter = Counter()
    execute = redis.client.Pipeline.execute

    def counting_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.count += 1
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counting_execute)
    return counter


def test_run_triggers_of_500_records_reaches_redis_in_one_pipeline(
    redis_broker: RedisBroker,
    pipeline_executes: Counter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def ship(order: Order) -> None:
        pass

    declared = trigger(Order, cron=None, queue="dt_enq_bulk", stream_batch_size=1000)(ship)
    with Order._meta.database.atomic():
        orders = [Order.create() for _ in range(500)]
    per_message = Counter()
    enqueue = redis_broker.enqueue

    def counting_enqueue(message: Message[Any], **kwargs: Any) -> Message[Any]:
        per_message.count += 1
        return enqueue(message, **kwargs)

    monkeypatch.setattr(redis_broker, "enqueue", counting_enqueue)

    sent = run_triggers(orders, declared)

    assert len(sent) == 500
    assert 1 <= pipeline_executes.count <= 2
    assert per_message.count == 0
    assert redis_broker.do_qsize("dt_enq_bulk") == 500
    stored = redis_messages(redis_broker, "dt_enq_bulk")
    assert sorted(message.args[0] for message in stored) == [order.id for order in orders]
    assert {message.actor_name for message in stored} == {declared.worker_actor_name}


def test_run_triggers_on_redis_skips_records_already_in_flight(
    redis_broker: RedisBroker,
) -> None:
    def ship(order: Order) -> None:
        pass

    declared = trigger(Order, cron=None, queue="dt_enq_marks")(ship)
    orders = [Order.create() for _ in range(10)]

    first = run_triggers(orders[:4], declared)
    second = run_triggers(orders, declared)

    assert (len(first), len(second)) == (4, 6)
    assert redis_broker.do_qsize("dt_enq_marks") == 10
    assert run_trigger(orders[0], declared) is None


def test_a_delayed_run_trigger_on_redis_lands_in_the_delay_queue(
    redis_broker: RedisBroker,
) -> None:
    def ship(order: Order) -> None:
        pass

    declared = trigger(Order, cron=None, queue="dt_enq_delay")(ship)
    order = Order.create()

    run_trigger(order, declared, delay=60_000)

    assert redis_messages(redis_broker, "dt_enq_delay") == []
    [delayed] = redis_messages(redis_broker, dq_name("dt_enq_delay"))
    assert delayed.args == (order.id,)
    assert delayed.options["eta"] > current_millis() + 50_000


def test_schedule_on_redis_queues_one_scheduler_message(redis_broker: RedisBroker) -> None:
    def ship(order: Order) -> None:
        pass

    declared = trigger(Order, queue="dt_enq_work", scheduler_queue="dt_enq_sched")(ship)

    first = schedule(Order, "ship")
    second = schedule(declared)

    assert first is not None and second is None
    assert redis_broker.do_qsize("dt_enq_sched") == 1
    [stored] = redis_messages(redis_broker, "dt_enq_sched")
    assert stored.actor_name == declared.scheduler_actor_name


def test_a_scheduler_run_by_a_redis_worker_processes_every_matching_row(
    redis_broker: RedisBroker,
) -> None:
    def ship(order: Order) -> None:
        order.state = "shipped"
        order.save()

    declared = trigger(Order, where=Order.state == "paid", queue="dt_enq_e2e",
                       stream_batch_size=7)(ship)
    orders = [Order.create() for _ in range(30)]
    Order.create(state="on hold")

    schedule(declared)
    worker = dramatiq.Worker(redis_broker, worker_timeout=100, worker_threads=2)
    worker.start()
    try:
        shipped = wait_for(
            lambda: Order.select().where(Order.state == "shipped").count() == 30, timeout=30
        )
        # Marks are cleared and messages acked just after each commit.
        marks_cleared = wait_for(
            lambda: not any(in_flight(declared, order) for order in orders), timeout=10
        )
        queue_empty = wait_for(lambda: redis_broker.do_qsize("dt_enq_e2e") == 0, timeout=10)
    finally:
        worker.stop()

    assert shipped and marks_cleared and queue_empty
    assert Order.select().where(Order.state == "on hold").count() == 1


def test_message_ids_made_a_page_at_a_time_are_distinct_version_4_uuids() -> None:
    import uuid

    from dramatiq_triggers.enqueue import message_ids

    ids = message_ids(2000)
    assert len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_a_scheduler_run_lost_with_its_message_holds_back_the_cron_only_for_its_ttl(
    sqlite_db: pw.SqliteDatabase,
) -> None:
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    from dramatiq_triggers import TriggersMiddleware, schedule, trigger

    broker = StubBroker()
    middleware = TriggersMiddleware(run_cron=False, scheduler_in_flight_ttl=50)
    broker.add_middleware(middleware)
    dramatiq.set_broker(broker)

    class Lamp(pw.Model):
        state = pw.CharField(default="on")

        class Meta:
            database = sqlite_db
            table_name = "enq_lamp"

    @trigger(Lamp, where=Lamp.state == "on")
    def switch_off(lamp: Lamp) -> None:
        pass

    assert schedule(switch_off) is not None
    broker.flush_all()  # the scheduler message is lost; its mark is not
    assert schedule(switch_off) is None

    from dramatiq_triggers.testing import wait_for

    assert wait_for(lambda: schedule(switch_off) is not None, timeout=5)
    broker.close()
