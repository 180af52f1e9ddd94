"""The scheduler on SQLite and a StubBroker: which rows a run enqueues, in
what order, at what cost in backend round trips, and with how much memory.

Worker messages are taken out of the queue unprocessed, so the messages of
one run are still in flight during the next.  The same behaviours run on
PostgreSQL and MariaDB in tests/integration/test_scheduler_databases.py.
"""

from __future__ import annotations

import datetime
import logging
import tracemalloc
from collections.abc import Callable
from typing import Any

import peewee as pw
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

from dramatiq_triggers import Trigger, TriggersMiddleware, current_actor, run_trigger, trigger
from dramatiq_triggers.scheduler import run_scheduler
from dramatiq_triggers.testing import process_message, schedule_and_run_triggers

BATCH = 7


def new_model(
    database: pw.Database, name: str = "sched_order", key: pw.CompositeKey | None = None,
    **fields: Any,
) -> type[pw.Model]:
    """Orders with a state, a priority and a note, plus ``fields``, on a new table."""
    columns = {
        "state": pw.CharField(default="paid"),
        "priority": pw.IntegerField(default=0),
        "note": pw.CharField(default=""),
        **fields,
    }
    meta = {"database": database, "table_name": name}
    if key is not None:
        meta["primary_key"] = key
    options = type("Meta", (), meta)
    model = type(name.title().replace("_", ""), (pw.Model,), {**columns, "Meta": options})
    database.create_tables([model])
    return model


@pytest.fixture
def Order(sqlite_db: pw.SqliteDatabase) -> type[pw.Model]:
    return new_model(sqlite_db)


def declare(model: type[pw.Model], action: Callable[..., None] | None = None,
            **options: Any) -> Trigger:
    """A trigger on the paid rows of ``model``, with a small page size."""
    options.setdefault("where", model.state == "paid")
    options.setdefault("stream_batch_size", BATCH)

    def ship(order: pw.Model) -> None:
        if action is not None:
            action(order)

    return trigger(model, cron="* * * * *", **options)(ship)


def add_paid(model: type[pw.Model], count: int, **values: Any) -> list[int]:
    """``count`` paid rows, each followed by a shipped one; the paid ids."""
    paid = []
    for _ in range(count):
        paid.append(model.create(state="paid", **values).id)
        model.create(state="shipped", **values)
    return paid


def take_enqueued(broker: StubBroker, declared: Trigger) -> list[Any]:
    """Remove the worker messages from the queue, unprocessed; their keys in order."""
    queue = broker.queues[declared.queue]
    keys = []
    while not queue.empty():
        keys.append(Message.decode(queue.get_nowait()).args[0])
        queue.task_done()
    return keys


def run_once(broker: StubBroker, declared: Trigger) -> list[Any]:
    result = schedule_and_run_triggers(declared, drain=False)
    assert result.success == 1, result
    return take_enqueued(broker, declared)


def count_claims(middleware: TriggersMiddleware, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of items of every claim on the backend."""
    backend = middleware.backend
    claim = backend.claim
    sizes: list[int] = []

    def counted(key: str, items: Any, **options: Any) -> list[bool]:
        sizes.append(len(items))
        return claim(key, items, **options)

    monkeypatch.setattr(backend, "claim", counted)
    return sizes


# -- which rows, in what order ------------------------------------------------------


@pytest.mark.parametrize("stream_with", ["keyset", "offset", "full_read"])
@pytest.mark.parametrize("matching", [0, 1, BATCH, BATCH + 1, 3 * BATCH + 2])
def test_each_stream_mode_enqueues_every_matching_row_once(
    stub_broker: StubBroker, Order: type[pw.Model], stream_with: str, matching: int
) -> None:
    paid = add_paid(Order, matching)
    declared = declare(Order, stream_with=stream_with)

    assert run_once(stub_broker, declared) == paid


@pytest.mark.parametrize("stream_with", ["keyset", "offset", "full_read"])
def test_a_sort_on_another_field_enqueues_in_that_order_with_ties_by_key(
    stub_broker: StubBroker, Order: type[pw.Model], stream_with: str
) -> None:
    for index in range(3 * BATCH + 2):
        Order.create(state="paid", priority=index % 4)
    declared = declare(Order, stream_with=stream_with, sort=[Order.priority.desc()])
    expected = [order.id for order in
                sorted(Order.select(), key=lambda order: (-order.priority, order.id))]

    assert run_once(stub_broker, declared) == expected


@pytest.mark.parametrize("descending", [False, True])
def test_a_datetime_sort_pages_through_ties_and_fractional_seconds(
    stub_broker: StubBroker, sqlite_db: pw.SqliteDatabase, descending: bool
) -> None:
    Order = new_model(sqlite_db, due_at=pw.DateTimeField())
    start = datetime.datetime(2026, 3, 1, 12, 0, 0)
    for index in range(3 * BATCH + 2):
        # Whole seconds and fractions of them, with several rows per instant.
        offset = datetime.timedelta(seconds=index // 3, microseconds=(index % 2) * 250_000)
        Order.create(state="paid", due_at=start + offset)
    sort = Order.due_at.desc() if descending else Order.due_at
    declared = declare(Order, sort=[sort])
    orders = list(Order.select())
    orders.sort(key=lambda order: order.id)
    orders.sort(key=lambda order: order.due_at, reverse=descending)

    assert run_once(stub_broker, declared) == [order.id for order in orders]


def test_a_composite_primary_key_is_enqueued_whole_in_key_order(
    stub_broker: StubBroker, sqlite_db: pw.SqliteDatabase
) -> None:
    Order = new_model(sqlite_db, key=pw.CompositeKey("region", "number"),
                      region=pw.CharField(), number=pw.IntegerField())
    keys = [[region, number] for number in range(BATCH + 2) for region in ("us", "eu")]
    Order.insert_many([{"region": r, "number": n, "state": "paid"} for r, n in keys]).execute()
    declared = declare(Order)

    assert run_once(stub_broker, declared) == sorted(keys)


def test_a_scheduler_reads_only_the_primary_key_and_the_sort_fields(
    stub_broker: StubBroker, Order: type[pw.Model], caplog: pytest.LogCaptureFixture
) -> None:
    add_paid(Order, BATCH + 1)
    declared = declare(Order, sort=[Order.priority])

    with caplog.at_level(logging.DEBUG, logger="peewee"):
        run_once(stub_broker, declared)

    selects = [record.getMessage() for record in caplog.records
               if "SELECT" in record.getMessage() and "sched_order" in record.getMessage()]
    assert selects
    for select in selects:
        columns = select.split("SELECT", 1)[1].split("FROM", 1)[0]
        assert columns.replace(" ", "") == '"t1"."priority","t1"."id"', select


def test_a_callable_where_is_evaluated_at_every_run(
    stub_broker: StubBroker, Order: type[pw.Model]
) -> None:
    ids = [Order.create(state="paid", priority=priority).id for priority in range(10)]
    cutoff = [3]
    declared = declare(Order, where=lambda: Order.priority < cutoff[0])

    first = run_once(stub_broker, declared)
    cutoff[0] = 6
    second = run_once(stub_broker, declared)

    assert (first, second) == (ids[:3], ids[3:6])


# -- what a run skips -------------------------------------------------------------


def test_rows_with_a_message_in_flight_are_skipped(
    stub_broker: StubBroker, Order: type[pw.Model]
) -> None:
    paid = add_paid(Order, 2 * BATCH)
    declared = declare(Order)
    for order in Order.select().where(Order.id.in_(paid[::3])):
        run_trigger(order, declared)
    take_enqueued(stub_broker, declared)

    assert run_once(stub_broker, declared) == [key for key in paid if key not in paid[::3]]
    assert run_once(stub_broker, declared) == []


def test_a_processed_row_that_still_matches_is_enqueued_by_the_next_run(
    stub_broker: StubBroker, Order: type[pw.Model]
) -> None:
    paid = add_paid(Order, 3)
    declared = declare(Order)
    assert schedule_and_run_triggers(declared).success == 1 + 3

    assert run_once(stub_broker, declared) == paid


def test_rows_done_by_a_trigger_once_trigger_are_skipped(
    stub_broker: StubBroker, Order: type[pw.Model]
) -> None:
    add_paid(Order, BATCH + 1)
    declared = declare(Order, trigger_once=True)
    assert schedule_and_run_triggers(declared).success == 1 + BATCH + 1
    late = Order.create(state="paid")

    assert run_once(stub_broker, declared) == [late.id]


# -- record_limit -----------------------------------------------------------------


@pytest.mark.parametrize("stream_with", ["keyset", "offset", "full_read"])
def test_record_limit_caps_a_run_and_the_next_run_takes_the_rest(
    stub_broker: StubBroker, Order: type[pw.Model], stream_with: str
) -> None:
    paid = add_paid(Order, 2 * BATCH)
    declared = declare(Order, stream_with=stream_with, record_limit=BATCH + 3)

    first = run_once(stub_broker, declared)
    second = run_once(stub_broker, declared)

    assert (first, second) == (paid[:BATCH + 3], paid[BATCH + 3:])


def test_trigger_once_rows_already_done_do_not_count_toward_the_record_limit(
    stub_broker: StubBroker, Order: type[pw.Model]
) -> None:
    paid = add_paid(Order, 6)
    declared = declare(Order, trigger_once=True, record_limit=2)
    assert schedule_and_run_triggers(declared).success == 1 + 2

    assert run_once(stub_broker, declared) == paid[2:4]


# -- round trips --------------------------------------------------------------------


@pytest.mark.parametrize("stream_with", ["keyset", "offset", "full_read"])
def test_a_page_takes_its_in_flight_marks_in_one_claim(
    stub_broker: StubBroker,
    middleware: TriggersMiddleware,
    Order: type[pw.Model],
    monkeypatch: pytest.MonkeyPatch,
    stream_with: str,
) -> None:
    add_paid(Order, 3 * BATCH + 2)
    declared = declare(Order, stream_with=stream_with)
    claims = count_claims(middleware, monkeypatch)

    run_once(stub_broker, declared)

    assert claims == [BATCH, BATCH, BATCH, 2]


def test_a_limited_run_over_rows_in_flight_costs_at_most_two_claims_a_page(
    stub_broker: StubBroker,
    middleware: TriggersMiddleware,
    Order: type[pw.Model],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paid = add_paid(Order, 30)
    declared = declare(Order, stream_batch_size=10, record_limit=2)
    for order in Order.select().where(Order.id.in_(paid[:25])):
        run_trigger(order, declared)
    take_enqueued(stub_broker, declared)
    claims = count_claims(middleware, monkeypatch)

    assert run_once(stub_broker, declared) == paid[25:27]
    # Three pages: each of them at most two claims, never one per row.
    assert len(claims) <= 6
    # The marks taken beyond the limit were given back for the next runs.
    assert run_once(stub_broker, declared) == paid[27:29]
    assert run_once(stub_broker, declared) == paid[29:]


def test_a_failed_enqueue_gives_the_page_marks_back_for_the_next_run(
    stub_broker: StubBroker, Order: type[pw.Model], monkeypatch: pytest.MonkeyPatch
) -> None:
    paid = add_paid(Order, BATCH + 2)
    declared = declare(Order)

    def refuse(message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        raise ConnectionError("the broker is down")

    monkeypatch.setattr(stub_broker, "enqueue", refuse)
    assert schedule_and_run_triggers(declared, drain=False).discard == 1
    monkeypatch.undo()

    assert run_once(stub_broker, declared) == paid


# -- the run as a job -----------------------------------------------------------------


def test_worker_messages_carry_the_actor_the_scheduler_ran_as(
    stub_broker: StubBroker, Order: type[pw.Model]
) -> None:
    add_paid(Order, BATCH + 1)
    actors: list[Any] = []
    declared = declare(Order, action=lambda order: actors.append(current_actor()))

    result = schedule_and_run_triggers(declared, actor={"user": 7})

    assert result.success == 1 + BATCH + 1
    assert actors == [{"user": 7}] * (BATCH + 1)


def test_the_scheduler_of_a_paused_trigger_is_cancelled_and_enqueues_nothing(
    stub_broker: StubBroker, Order: type[pw.Model]
) -> None:
    add_paid(Order, 3)
    declared = declare(Order, state="paused")

    outcome = process_message(stub_broker, declared.scheduler_actor.message())

    assert outcome == "cancelled"
    assert take_enqueued(stub_broker, declared) == []


# -- memory -----------------------------------------------------------------------


@pytest.mark.parametrize("stream_with", ["keyset", "offset", "full_read"])
def test_the_scheduler_memory_does_not_grow_with_the_number_of_matching_rows(
    stub_broker: StubBroker,
    middleware: TriggersMiddleware,
    sqlite_db: pw.SqliteDatabase,
    monkeypatch: pytest.MonkeyPatch,
    stream_with: str,
) -> None:
    # Neither the marks nor the messages are kept, so what is measured is
    # the scheduler alone, not the queue it fills.
    monkeypatch.setattr(stub_broker, "enqueue", lambda message, delay=None: message)

    def peak(rows: int) -> int:
        Order = new_model(sqlite_db, f"sched_order_{rows}")
        with sqlite_db.atomic():
            for start in range(0, rows, 500):
                Order.insert_many([{"state": "paid"}] * min(500, rows - start)).execute()
        declared = declare(Order, stream_with=stream_with, stream_batch_size=500)
        monkeypatch.setattr(middleware.backend, "claim",
                            lambda key, items, **options: [True] * len(items))
        run_scheduler(declared)
        tracemalloc.start()
        try:
            assert run_scheduler(declared) == rows
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(2_000), peak(20_000)

    # Holding one small tuple per row would already add about 2 MB here.
    assert large - small < 1024 * 1024, (small, large)
