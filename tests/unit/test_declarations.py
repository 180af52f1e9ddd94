"""Declaring triggers and scheduled actions: every option and its default,
fixed actor names, the ``where`` filter, primary keys of every shape, and the
mistakes that must fail when the declaring module is imported."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import peewee as pw
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

from dramatiq_triggers import (
    ScheduledAction,
    Trigger,
    TriggerDeclarationError,
    TriggersMiddleware,
    build_trigger,
    info,
    run_trigger,
    scheduled_action,
    trigger,
)
from dramatiq_triggers.declarations import forget_all
from dramatiq_triggers.testing import schedule_and_run_triggers


class Order(pw.Model):
    state = pw.CharField(default="paid")
    due_at = pw.DateTimeField(null=True)
    placed_at = pw.DateTimeField(default=datetime.datetime(2026, 1, 1))

    class Meta:
        table_name = "decl_order"


class Customer(pw.Model):
    name = pw.CharField(default="Ada")

    class Meta:
        table_name = "decl_customer"


class Shipment(pw.Model):
    warehouse = pw.CharField()
    number = pw.IntegerField()
    state = pw.CharField(default="new")

    class Meta:
        table_name = "decl_shipment"
        primary_key = pw.CompositeKey("warehouse", "number")


class Device(pw.Model):
    id = pw.UUIDField(primary_key=True, default=uuid.uuid4)
    state = pw.CharField(default="new")

    class Meta:
        table_name = "decl_device"


class Coupon(pw.Model):
    code = pw.CharField(primary_key=True)
    state = pw.CharField(default="new")

    class Meta:
        table_name = "decl_coupon"


class AuditLine(pw.Model):
    text = pw.CharField()

    class Meta:
        table_name = "decl_audit_line"
        primary_key = False


MODELS = [Order, Customer, Shipment, Device, Coupon, AuditLine]


@pytest.fixture
def db(sqlite_db: pw.SqliteDatabase, stub_broker: StubBroker) -> Iterator[pw.SqliteDatabase]:
    sqlite_db.bind(MODELS)
    sqlite_db.create_tables(MODELS)
    yield sqlite_db
    sqlite_db.drop_tables(MODELS)


def ship(order: Order) -> None:
    order.state = "shipped"
    order.save()


def mark_failed(order: Order, error: BaseException) -> None:
    order.state = "failed"
    order.save()


def report() -> None:
    pass


def declaration_error(declare: Callable[[], Any]) -> str:
    with pytest.raises(TriggerDeclarationError) as caught:
        declare()
    return str(caught.value)


# Options and their defaults


def test_every_trigger_option_is_an_attribute_with_its_documented_default(
    db: pw.SqliteDatabase,
) -> None:
    declared = trigger(Order)(ship)

    assert isinstance(declared, Trigger)
    assert declared.model is Order
    assert declared.name == "ship"
    assert declared.action is ship
    assert declared.where is None
    assert declared.cron == "* * * * *"
    assert declared.queue == "decl_order_ship"
    assert declared.scheduler_queue == "decl_order_ship"
    assert declared.max_attempts == 1
    assert declared.max_scheduler_attempts == 1
    assert declared.backoff is None
    assert declared.timeout is None
    assert declared.record_limit is None
    assert declared.stream_batch_size >= 100
    assert declared.sort_orderings() == [(Order.id, False)]
    assert declared.stream_with == "keyset"
    assert declared.lock_for_update is True
    assert declared.read_metadata is None
    assert declared.action_input == {}
    assert declared.on_error is None
    assert declared.on_error_fails_job is False
    assert declared.trigger_once is False
    assert declared.log_errors is True
    assert declared.log_final_error is True
    assert declared.debug is False
    assert declared.state == "active"
    assert declared.actor_persister is None
    assert declared.default_actor is None
    assert declared.worker_actor_name == "dramatiq_triggers.decl_order.ship.worker"
    assert declared.scheduler_actor_name == "dramatiq_triggers.decl_order.ship.scheduler"


def test_priorities_default_as_in_ash_oban_so_workers_run_before_schedulers(
    db: pw.SqliteDatabase,
) -> None:
    declared = trigger(Order)(ship)

    assert declared.worker_priority == 2
    assert declared.scheduler_priority == 3
    assert declared.worker_actor.priority == 2
    assert declared.scheduler_actor.priority == 3


def test_options_given_are_kept_as_attributes_and_reach_the_dramatiq_actors(
    db: pw.SqliteDatabase,
) -> None:
    def ship_fast(order: Order, *, speed: str, metadata: dict[str, Any]) -> None:
        pass

    def read_metadata(order: Order) -> dict[str, Any]:
        return {"id": order.id}

    declared = trigger(
        Order, where=Order.state == "paid", cron="*/5 * * * *", name="express",
        queue="orders", scheduler_queue="order_schedulers", max_attempts=4,
        max_scheduler_attempts=2, backoff=250, timeout=30_000, record_limit=50,
        stream_batch_size=10, sort=[Order.placed_at.desc()], stream_with="offset",
        lock_for_update=False, read_metadata=read_metadata, action_input={"speed": "high"},
        on_error=mark_failed, on_error_fails_job=True, trigger_once=True, log_errors=False,
        log_final_error=False, debug=True, state="paused", worker_priority=0,
        scheduler_priority=1, default_actor={"id": "system"},
    )(ship_fast)

    assert declared.name == "express"
    assert declared.cron == "*/5 * * * *"
    assert (declared.queue, declared.scheduler_queue) == ("orders", "order_schedulers")
    assert (declared.max_attempts, declared.max_scheduler_attempts) == (4, 2)
    assert (declared.backoff, declared.timeout, declared.record_limit) == (250, 30_000, 50)
    assert declared.stream_batch_size == 10
    assert declared.sort_orderings() == [(Order.placed_at, True), (Order.id, False)]
    assert declared.stream_with == "offset"
    assert declared.lock_for_update is False
    assert declared.read_metadata is read_metadata
    assert declared.action_input == {"speed": "high"}
    assert declared.on_error is mark_failed
    assert declared.on_error_fails_job is True
    assert declared.trigger_once is True
    assert (declared.log_errors, declared.log_final_error, declared.debug) == (False, False, True)
    assert declared.state == "paused"
    assert declared.default_actor == {"id": "system"}
    assert declared.worker_actor.queue_name == "orders"
    assert declared.scheduler_actor.queue_name == "order_schedulers"
    assert declared.worker_actor.options["max_retries"] == 3
    assert declared.scheduler_actor.options["max_retries"] == 1
    assert declared.worker_actor.options["time_limit"] == 30_000
    assert (declared.worker_actor.priority, declared.scheduler_actor.priority) == (0, 1)


def test_the_scheduler_queue_follows_a_custom_worker_queue(db: pw.SqliteDatabase) -> None:
    declared = trigger(Order, queue="shipping")(ship)

    assert declared.scheduler_queue == "shipping"


def test_a_nullable_sort_field_is_accepted_with_offset_streaming(
    db: pw.SqliteDatabase,
) -> None:
    declared = trigger(Order, sort=[Order.due_at], stream_with="offset")(ship)

    assert declared.sort_orderings() == [(Order.due_at, False), (Order.id, False)]


def test_a_six_field_cron_with_seconds_first_is_accepted(db: pw.SqliteDatabase) -> None:
    declared = trigger(Order, cron="*/10 * * * * *")(ship)

    assert declared.cron == "*/10 * * * * *"


def test_cron_none_disables_the_scheduler_but_run_trigger_still_works(
    db: pw.SqliteDatabase,
) -> None:
    declared = trigger(Order, cron=None)(ship)
    order = Order.create()

    run_trigger(order, declared)
    result = schedule_and_run_triggers(Order)

    assert declared.has_cron() is False
    assert result.success == 1
    assert Order.get_by_id(order.id).state == "shipped"


# Actor names


def test_fixed_actor_names_are_the_dramatiq_actor_names(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    declared = trigger(Order, worker_actor_name="orders.ship.worker",
                       scheduler_actor_name="orders.ship.scheduler")(ship)
    order = Order.create()

    message = build_trigger(order, declared)

    assert message.actor_name == "orders.ship.worker"
    assert stub_broker.get_actor("orders.ship.worker") is declared.worker_actor
    assert stub_broker.get_actor("orders.ship.scheduler") is declared.scheduler_actor


def test_a_renamed_action_with_fixed_actor_names_still_processes_queued_messages(
    db: pw.SqliteDatabase,
) -> None:
    # The queue defaults to "<table>_<name>", so it is fixed along with the
    # actor names for the renamed trigger to read the same queue.
    names = {"worker_actor_name": "orders.ship.worker",
             "scheduler_actor_name": "orders.ship.scheduler", "queue": "orders"}
    trigger(Order, cron=None, **names)(ship)
    order = Order.create()
    queued = build_trigger(order, "ship").encode()

    # The next release renames the function and the trigger, and a new
    # worker process starts; the message queued by the old one is waiting.
    forget_all()
    new_broker = StubBroker()
    new_broker.add_middleware(TriggersMiddleware(run_cron=False))
    dramatiq.set_broker(new_broker)

    def ship_order(order: Order) -> None:
        order.state = "shipped by the new code"
        order.save()

    trigger(Order, cron=None, name="ship_order", **names)(ship_order)
    new_broker.enqueue(Message.decode(queued))
    result = schedule_and_run_triggers(Order)
    new_broker.close()

    assert result.success == 1
    assert Order.get_by_id(order.id).state == "shipped by the new code"


def test_derived_actor_names_come_from_the_table_and_trigger_name_not_the_function(
    db: pw.SqliteDatabase,
) -> None:
    declared = trigger(Order, name="dispatch")(ship)

    assert declared.worker_actor_name == "dramatiq_triggers.decl_order.dispatch.worker"
    assert declared.worker_actor.actor_name == declared.worker_actor_name


# The where filter


def test_where_as_an_expression_limits_the_rows_processed(db: pw.SqliteDatabase) -> None:
    paid = Order.create(state="paid")
    cancelled = Order.create(state="cancelled")
    trigger(Order, where=Order.state == "paid")(ship)

    schedule_and_run_triggers(Order)

    assert Order.get_by_id(paid.id).state == "shipped"
    assert Order.get_by_id(cancelled.id).state == "cancelled"


def test_where_as_a_callable_is_evaluated_again_at_every_run(db: pw.SqliteDatabase) -> None:
    clock = {"now": datetime.datetime(2026, 5, 1, 12, 0)}
    due = datetime.datetime(2026, 5, 1, 13, 0)
    order = Order.create(due_at=due)
    trigger(Order, where=lambda: Order.due_at <= clock["now"])(ship)

    early = schedule_and_run_triggers(Order)
    assert Order.get_by_id(order.id).state == "paid"

    clock["now"] = datetime.datetime(2026, 5, 1, 14, 0)
    late = schedule_and_run_triggers(Order)

    assert early.success == 1  # the scheduler alone
    assert late.success == 2  # the scheduler and the worker
    assert Order.get_by_id(order.id).state == "shipped"


def test_where_expression_calls_the_callable_each_time(db: pw.SqliteDatabase) -> None:
    calls: list[int] = []

    def due_now() -> pw.Expression:
        calls.append(1)
        return Order.state == "paid"

    declared = trigger(Order, where=due_now)(ship)
    before = len(calls)
    declared.where_expression()
    declared.where_expression()

    assert len(calls) == before + 2


def test_where_may_reach_other_tables_through_a_subquery(db: pw.SqliteDatabase) -> None:
    Customer.create(name="vip")
    order = Order.create(state="vip")
    other = Order.create(state="nobody")
    trigger(Order, where=Order.state.in_(Customer.select(Customer.name)))(ship)

    schedule_and_run_triggers(Order)

    assert Order.get_by_id(order.id).state == "shipped"
    assert Order.get_by_id(other.id).state == "nobody"


def test_a_custom_sort_still_enqueues_each_row_by_its_primary_key(
    db: pw.SqliteDatabase,
) -> None:
    for day in (3, 1, 2):
        Order.create(placed_at=datetime.datetime(2026, 1, day))
    trigger(Order, where=Order.state == "paid", sort=[Order.placed_at],
            stream_batch_size=2)(ship)

    result = schedule_and_run_triggers(Order)

    assert result.success == 1 + 3
    assert Order.select().where(Order.state == "shipped").count() == 3


# Primary keys of every shape


def test_a_composite_primary_key_works_for_run_trigger_and_processing(
    db: pw.SqliteDatabase,
) -> None:
    def send(shipment: Shipment) -> None:
        shipment.state = "sent"
        shipment.save()

    declared = trigger(Shipment, where=Shipment.state == "new", cron=None)(send)
    shipment = Shipment.create(warehouse="north", number=7)
    Shipment.create(warehouse="north", number=8)

    assert run_trigger(shipment, declared) is not None
    result = schedule_and_run_triggers(declared)

    assert result.success == 1
    assert Shipment.get(warehouse="north", number=7).state == "sent"
    assert Shipment.get(warehouse="north", number=8).state == "new"


def test_the_scheduler_pages_through_a_composite_primary_key(db: pw.SqliteDatabase) -> None:
    def send(shipment: Shipment) -> None:
        shipment.state = "sent"
        shipment.save()

    for warehouse in ("north", "south"):
        for number in range(1, 4):
            Shipment.create(warehouse=warehouse, number=number)
    trigger(Shipment, where=Shipment.state == "new", stream_batch_size=2)(send)

    result = schedule_and_run_triggers(Shipment)

    assert result.success == 1 + 6
    assert Shipment.select().where(Shipment.state == "sent").count() == 6


def test_a_uuid_primary_key_works_for_run_trigger_and_processing(
    db: pw.SqliteDatabase,
) -> None:
    def activate(device: Device) -> None:
        device.state = "active"
        device.save()

    declared = trigger(Device, cron=None)(activate)
    device = Device.create()

    message = run_trigger(device, declared)
    result = schedule_and_run_triggers(declared)

    assert message is not None and message.args[0] == str(device.id)
    assert result.success == 1
    assert Device.get_by_id(device.id).state == "active"


def test_a_string_primary_key_works_for_run_trigger_and_the_scheduler(
    db: pw.SqliteDatabase,
) -> None:
    def redeem(coupon: Coupon) -> None:
        coupon.state = "redeemed"
        coupon.save()

    trigger(Coupon, where=Coupon.state == "new", stream_batch_size=2)(redeem)
    codes = ["SPRING", "summer-10", "Autumn 5", "winter"]
    for code in codes:
        Coupon.create(code=code)

    run_trigger(Coupon.get_by_id("Autumn 5"), "redeem")
    result = schedule_and_run_triggers(Coupon)

    assert result.success == 1 + 4
    assert [c.state for c in Coupon.select().order_by(Coupon.code)] == ["redeemed"] * 4


# Declaration mistakes


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({"cron": "every minute"}, "crontab"),
        ({"cron": "61 * * * *"}, "crontab"),
        ({"cron": 5}, "cron="),
        ({"state": "sleeping"}, "'paused'"),
        ({"stream_with": "cursor"}, "'keyset'"),
        ({"where": "state = 'paid'"}, "expression"),
        ({"where": True}, "expression"),
        ({"where": Customer.name == "Ada"}, "subquery"),
        ({"where": lambda: Customer.name == "Ada"}, "subquery"),
        ({"where": lambda: "state = 'paid'"}, "expression"),
        ({"where": lambda state: Order.state == state}, "where() -> expression"),
        ({"where": Order.select()}, "expression"),
        ({"where": lambda: Order.missing == 1}, "calling where() raised"),
        ({"max_attempts": 0}, "positive integer"),
        ({"max_attempts": -2}, "positive integer"),
        ({"max_attempts": 1.5}, "positive integer"),
        ({"max_scheduler_attempts": 0}, "positive integer"),
        ({"stream_batch_size": 0}, "positive integer"),
        ({"record_limit": 0}, "positive integer"),
        ({"timeout": 0}, "positive integer"),
        ({"timeout": -1000}, "positive integer"),
        ({"backoff": -1}, "backoff="),
        ({"backoff": "fast"}, "backoff="),
        ({"backoff": lambda: 1000}, "backoff(attempt)"),
        ({"queue": "bad queue!"}, "Queue names"),
        ({"queue": "9lives"}, "Queue names"),
        ({"scheduler_queue": "two words"}, "Queue names"),
        ({"on_error": "mark_failed"}, "on_error(record, error)"),
        ({"on_error": lambda order: None}, "on_error(record, error)"),
        ({"on_error": lambda order, error, extra: None}, "on_error(record, error)"),
        ({"sort": [Order.due_at]}, "stream_with='offset'"),
        ({"sort": [Customer.name]}, "sort="),
        ({"read_metadata": lambda: {}}, "read_metadata(record)"),
        ({"read_metadata": lambda order: {}}, "metadata=..."),
        ({"action_input": {"speed": "fast"}}, "speed=..."),
        ({"action_input": ["speed"]}, "action_input="),
        ({"worker_priority": "high"}, "priority"),
        ({"scheduler_priority": None}, "priority"),
        ({"actor_persister": object()}, "ActorPersister"),
        ({"worker_actor_name": "same", "scheduler_actor_name": "same"}, "different names"),
        ({"worker_actor_name": ""}, "stable name"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_a_wrong_trigger_option_fails_at_declaration_naming_model_trigger_and_fix(
    db: pw.SqliteDatabase, options: dict[str, Any], fix: str
) -> None:
    message = declaration_error(lambda: trigger(Order, **options)(ship))

    assert "Order" in message
    assert "'ship'" in message
    assert fix in message


def test_a_rejected_declaration_leaves_nothing_behind(
    db: pw.SqliteDatabase, stub_broker: StubBroker
) -> None:
    declaration_error(lambda: trigger(Order, cron="bad")(ship))

    assert info.triggers(Order) == []
    assert "dramatiq_triggers.decl_order.ship.worker" not in stub_broker.actors
    assert trigger(Order)(ship).name == "ship"


def test_a_duplicate_trigger_name_on_a_model_is_rejected(db: pw.SqliteDatabase) -> None:
    trigger(Order)(ship)

    def other(order: Order) -> None:
        pass

    message = declaration_error(lambda: trigger(Order, name="ship")(other))

    assert "Order" in message and "'ship'" in message
    assert "unique per model" in message


def test_the_same_trigger_name_on_two_models_is_fine(db: pw.SqliteDatabase) -> None:
    def archive(record: pw.Model) -> None:
        pass

    first = trigger(Order)(archive)
    second = trigger(Customer)(archive)

    assert first.worker_actor_name != second.worker_actor_name


def test_a_worker_actor_name_used_by_another_trigger_is_rejected(
    db: pw.SqliteDatabase,
) -> None:
    def greet(customer: Customer) -> None:
        pass

    trigger(Order, worker_actor_name="shared.worker")(ship)
    message = declaration_error(lambda: trigger(Customer, worker_actor_name="shared.worker")(greet))

    assert "Customer" in message and "'greet'" in message
    assert "'shared.worker' is already used by Trigger(Order, 'ship')" in message
    assert "its own worker_actor_name" in message


def test_a_scheduler_actor_name_equal_to_another_worker_name_is_rejected(
    db: pw.SqliteDatabase,
) -> None:
    def greet(customer: Customer) -> None:
        pass

    declared = trigger(Order)(ship)
    message = declaration_error(
        lambda: trigger(Customer, scheduler_actor_name=declared.worker_actor_name)(greet)
    )

    assert "scheduler_actor_name" in message and "already used" in message


def test_an_actor_name_already_taken_by_a_plain_dramatiq_actor_is_rejected(
    db: pw.SqliteDatabase,
) -> None:
    @dramatiq.actor(actor_name="orders.ship.worker")
    def legacy_ship(order_id: int) -> None:
        pass

    message = declaration_error(
        lambda: trigger(Order, worker_actor_name="orders.ship.worker")(ship)
    )

    assert "Order" in message and "'ship'" in message
    assert "already the name of a Dramatiq actor" in message
    assert info.triggers(Order) == []


@pytest.mark.parametrize(
    "action",
    [
        lambda: None,
        lambda order, speed: None,
        lambda order, *, speed: None,
    ],
    ids=["no record", "a required extra argument", "a required keyword"],
)
def test_an_action_whose_signature_cannot_take_the_record_is_rejected(
    db: pw.SqliteDatabase, action: Callable[..., Any]
) -> None:
    message = declaration_error(lambda: trigger(Order, name="ship")(action))

    assert "Order" in message and "'ship'" in message
    assert "Change its signature to accept action(record" in message


def test_an_action_taking_action_input_and_metadata_is_accepted(db: pw.SqliteDatabase) -> None:
    seen: dict[str, Any] = {}

    def ship_with(order: Order, *, carrier: str, metadata: dict[str, Any]) -> None:
        seen.update(carrier=carrier, metadata=metadata)

    trigger(Order, action_input={"carrier": "post"},
            read_metadata=lambda order: {"order": order.id})(ship_with)
    order = Order.create()

    schedule_and_run_triggers(Order)

    assert seen == {"carrier": "post", "metadata": {"order": order.id}}


def test_a_model_without_a_primary_key_is_rejected(db: pw.SqliteDatabase) -> None:
    def keep(line: AuditLine) -> None:
        pass

    message = declaration_error(lambda: trigger(AuditLine)(keep))

    assert "AuditLine" in message and "'keep'" in message
    assert "no primary key" in message
    assert "Give the model a primary key" in message


def test_something_that_is_not_a_model_is_rejected(db: pw.SqliteDatabase) -> None:
    message = declaration_error(lambda: trigger(dict)(ship))  # type: ignore[arg-type]

    assert "peewee Model class" in message


def test_a_trigger_name_that_is_not_an_identifier_is_rejected(db: pw.SqliteDatabase) -> None:
    message = declaration_error(lambda: trigger(Order, name="ship it")(ship))

    assert "Order" in message and "'ship it'" in message
    assert "identifier" in message


def test_a_broker_without_the_middleware_is_rejected(db: pw.SqliteDatabase) -> None:
    bare = StubBroker()
    dramatiq.set_broker(bare)
    try:
        message = declaration_error(lambda: trigger(Order)(ship))
        action_message = declaration_error(
            lambda: scheduled_action(cron="0 * * * *")(report)
        )
    finally:
        bare.close()

    assert "Order" in message and "'ship'" in message
    assert "has no TriggersMiddleware" in message
    assert "broker.add_middleware(TriggersMiddleware())" in message
    assert "'report'" in action_message and "has no TriggersMiddleware" in action_message


# Scheduled actions


def test_every_scheduled_action_option_has_its_documented_default(
    db: pw.SqliteDatabase,
) -> None:
    declared = scheduled_action(cron="0 6 * * *")(report)

    assert isinstance(declared, ScheduledAction)
    assert declared.model is None
    assert declared.name == "report"
    assert declared.action is report
    assert declared.cron == "0 6 * * *"
    assert declared.action_input == {}
    assert declared.queue == "scheduled_report"
    assert declared.max_attempts == 1
    assert declared.backoff is None
    assert declared.timeout is None
    assert declared.state == "active"
    assert declared.debug is False
    assert declared.actor_persister is None
    assert declared.default_actor is None
    assert declared.actor_name == "dramatiq_triggers.scheduled.report.scheduled_action"
    assert declared.actor.actor_name == declared.actor_name
    assert declared.accepts_last_attempt is False


def test_scheduled_action_options_are_kept_and_reach_the_dramatiq_actor(
    db: pw.SqliteDatabase,
) -> None:
    def cleanup(*, days: int) -> None:
        pass

    declared = scheduled_action(
        Order, cron="0 3 * * *", name="purge", action_input={"days": 30}, queue="maintenance",
        max_attempts=3, backoff=1000, timeout=60_000, priority=7, state="paused", debug=True,
        default_actor="system", actor_name="orders.purge",
    )(cleanup)

    assert declared.model is Order
    assert declared.name == "purge"
    assert declared.action_input == {"days": 30}
    assert declared.queue == declared.actor.queue_name == "maintenance"
    assert declared.max_attempts == 3
    assert declared.actor.options["max_retries"] == 2
    assert declared.actor.options["time_limit"] == 60_000
    assert (declared.backoff, declared.timeout, declared.priority) == (1000, 60_000, 7)
    assert (declared.state, declared.debug, declared.default_actor) == ("paused", True, "system")
    assert declared.actor_name == declared.actor.actor_name == "orders.purge"


def test_a_scheduled_action_with_a_model_is_queued_and_named_under_its_table(
    db: pw.SqliteDatabase,
) -> None:
    declared = scheduled_action(Order, cron="0 * * * *")(report)

    assert declared.queue == "decl_order_report"
    assert declared.actor_name == "dramatiq_triggers.decl_order.report.scheduled_action"


def test_action_input_reaches_the_scheduled_function_as_keyword_arguments(
    db: pw.SqliteDatabase,
) -> None:
    calls: list[dict[str, Any]] = []

    def cleanup(*, days: int, dry_run: bool = True) -> None:
        calls.append({"days": days, "dry_run": dry_run})

    declared = scheduled_action(cron="0 3 * * *", action_input={"days": 30})(cleanup)
    result = schedule_and_run_triggers(declared)

    assert result.success == 1
    assert calls == [{"days": 30, "dry_run": True}]


def test_last_attempt_is_passed_when_the_function_accepts_it(db: pw.SqliteDatabase) -> None:
    seen: list[bool] = []

    def flaky(*, last_attempt: bool) -> None:
        seen.append(last_attempt)
        if not last_attempt:
            raise RuntimeError("the report server is down")

    declared = scheduled_action(cron="0 3 * * *", max_attempts=2, backoff=0)(flaky)
    result = schedule_and_run_triggers(declared)

    assert declared.accepts_last_attempt is True
    assert seen == [False, True]
    assert (result.failure, result.success) == (1, 1)


def test_last_attempt_reaches_a_function_that_takes_any_keyword(
    db: pw.SqliteDatabase,
) -> None:
    seen: list[dict[str, Any]] = []

    def flexible(**kwargs: Any) -> None:
        seen.append(kwargs)

    declared = scheduled_action(cron="0 3 * * *", action_input={"region": "eu"})(flexible)
    schedule_and_run_triggers(declared)

    assert seen == [{"region": "eu", "last_attempt": True}]


def test_last_attempt_is_not_passed_to_a_function_that_does_not_take_it(
    db: pw.SqliteDatabase,
) -> None:
    calls: list[str] = []

    def plain() -> None:
        calls.append("ran")

    declared = scheduled_action(cron="0 3 * * *")(plain)
    result = schedule_and_run_triggers(declared)

    assert declared.accepts_last_attempt is False
    assert (result.success, calls) == (1, ["ran"])


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({"cron": "whenever"}, "crontab"),
        ({"cron": None}, "cron="),
        ({"cron": "0 * * * *", "state": "off"}, "'paused'"),
        ({"cron": "0 * * * *", "max_attempts": 0}, "positive integer"),
        ({"cron": "0 * * * *", "timeout": 0}, "positive integer"),
        ({"cron": "0 * * * *", "backoff": -5}, "backoff="),
        ({"cron": "0 * * * *", "queue": "no spaces please"}, "Queue names"),
        ({"cron": "0 * * * *", "priority": "urgent"}, "priority"),
        ({"cron": "0 * * * *", "action_input": {"days": 3}}, "function(days=...)"),
        ({"cron": "0 * * * *", "actor_persister": 42}, "ActorPersister"),
        ({"cron": "0 * * * *", "name": "not-an-identifier"}, "identifier"),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_a_wrong_scheduled_action_option_fails_at_declaration(
    db: pw.SqliteDatabase, options: dict[str, Any], fix: str
) -> None:
    message = declaration_error(lambda: scheduled_action(Order, **options)(report))

    assert "scheduled action" in message
    assert "Order" in message
    assert fix in message


def test_a_scheduled_function_that_requires_an_argument_is_rejected(
    db: pw.SqliteDatabase,
) -> None:
    def needs_a_day(day: str) -> None:
        pass

    message = declaration_error(lambda: scheduled_action(cron="0 * * * *")(needs_a_day))

    assert "'needs_a_day'" in message
    assert "Change its signature" in message


def test_a_duplicate_scheduled_action_name_is_rejected(db: pw.SqliteDatabase) -> None:
    scheduled_action(Order, cron="0 * * * *")(report)

    message = declaration_error(
        lambda: scheduled_action(Order, cron="0 1 * * *", name="report")(lambda: None)
    )

    assert "'report'" in message and "Order" in message
    assert "unique per model" in message


def test_a_scheduled_action_actor_name_taken_by_a_trigger_is_rejected(
    db: pw.SqliteDatabase,
) -> None:
    declared = trigger(Order)(ship)

    message = declaration_error(
        lambda: scheduled_action(cron="0 * * * *", actor_name=declared.worker_actor_name)(report)
    )

    assert "already used by Trigger(Order, 'ship')" in message


def test_a_scheduled_action_model_that_is_not_a_model_is_rejected(
    db: pw.SqliteDatabase,
) -> None:
    message = declaration_error(
        lambda: scheduled_action("Order", cron="0 * * * *")(report)  # type: ignore[arg-type]
    )

    assert "peewee Model class or None" in message


def test_declaring_again_on_a_new_broker_replaces_the_old_declaration(
    db: pw.SqliteDatabase,
) -> None:
    first = trigger(Order, where=Order.state == "paid")(ship)

    broker = StubBroker()
    broker.add_middleware(TriggersMiddleware(run_cron=False))
    dramatiq.set_broker(broker)
    second = trigger(Order, where=Order.state == "paid")(ship)

    assert first is not second
    assert info.trigger(Order, "ship") is second
    assert second.worker_actor.broker is broker
    broker.close()


def test_declaring_the_same_name_twice_on_one_broker_still_fails(
    db: pw.SqliteDatabase,
) -> None:
    trigger(Order, where=Order.state == "paid")(ship)

    message = declaration_error(lambda: trigger(Order, where=Order.state == "paid")(ship))

    assert "already has a trigger named 'ship'" in message


def test_an_action_with_a_required_keyword_names_action_input_as_the_fix(
    db: pw.SqliteDatabase,
) -> None:
    def remind(order: Order, *, channel: str) -> None:
        pass

    message = declaration_error(lambda: trigger(Order, cron=None)(remind))

    assert "channel" in message
    assert "action_input" in message
