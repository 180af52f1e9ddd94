"""The scheduler on SQLite, PostgreSQL and MariaDB.

Every test here runs once per database: the pages a scheduler reads (keyset
conditions, row-value comparisons, offsets, primary key types) are SQL that
each database must answer the same way.  Worker messages are read back from
the ``StubBroker`` queue without being processed, so the messages of one
run are still in flight during the next.  The last test checks the broker
round trips of a page on a real Redis.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import peewee as pw
import pytest
import redis
from conftest import require_service
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from playhouse.db_url import connect

from dramatiq_triggers import RedisBackend, Trigger, TriggersMiddleware, run_trigger, trigger
from dramatiq_triggers.scheduler import run_scheduler
from dramatiq_triggers.testing import schedule_and_run_triggers

pytestmark = pytest.mark.integration

BATCH = 7
STREAM_MODES = ["keyset", "offset", "full_read"]

MakeTable = Callable[..., type[pw.Model]]


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[pw.Database]:
    if request.param == "sqlite":
        database: pw.Database = pw.SqliteDatabase(
            str(tmp_path / "scheduler.db"), pragmas={"journal_mode": "wal"}, timeout=10
        )
    else:
        database = connect(require_service(request.param))
    yield database
    if not database.is_closed():
        database.close()


def new_model(
    database: pw.Database, fields: dict[str, Any] | None = None, **meta: Any
) -> type[pw.Model]:
    """A model on a new table of its own (orders with a state, by default)."""
    table = f"sched_order_{uuid.uuid4().hex[:12]}"
    columns = fields if fields is not None else {
        "state": pw.CharField(default="paid"),
        "priority": pw.IntegerField(default=0),
        "rank": pw.IntegerField(default=0),
        "note": pw.CharField(default=""),
    }
    options = type("Meta", (), {"database": database, "table_name": table, **meta})
    model = type(f"Order_{table}", (pw.Model,), {**columns, "Meta": options})
    database.create_tables([model])
    return model


@pytest.fixture
def make_table(database: pw.Database) -> Iterator[MakeTable]:
    """Make models with ``new_model``; their tables are dropped afterwards."""
    made: list[type[pw.Model]] = []

    def make(fields: dict[str, Any] | None = None, **meta: Any) -> type[pw.Model]:
        made.append(new_model(database, fields, **meta))
        return made[-1]

    yield make
    database.drop_tables(made)
    database.close()


def declare(model: type[pw.Model], **options: Any) -> Trigger:
    """A trigger on the paid rows of ``model``, with a small page size."""
    options.setdefault("where", model.state == "paid")
    options.setdefault("stream_batch_size", BATCH)

    def ship(order: pw.Model) -> None:
        pass

    return trigger(model, cron="* * * * *", **options)(ship)


def take_enqueued(broker: StubBroker, declared: Trigger) -> list[Any]:
    """Remove the worker messages from the queue; return their primary keys in order.

    The messages are not processed, so their in-flight marks stay taken.
    """
    queue = broker.queues[declared.queue]
    keys = []
    while not queue.empty():
        message = Message.decode(queue.get_nowait())
        queue.task_done()
        assert message.actor_name == declared.worker_actor_name
        keys.append(message.args[0])
    return keys


def run_once(broker: StubBroker, declared: Trigger) -> list[Any]:
    """Run the scheduler once; return the primary keys it enqueued, in order."""
    result = schedule_and_run_triggers(declared, drain=False)
    assert result.success == 1, result
    return take_enqueued(broker, declared)


def add_orders(model: type[pw.Model], rows: list[dict[str, Any]]) -> list[Any]:
    """Insert the rows; return the ids of the paid ones, in insertion order."""
    paid = []
    for row in rows:
        order = model.create(**row)
        if row.get("state", "paid") == "paid":
            paid.append(order.id)
    return paid


def interleaved(matching: int) -> list[dict[str, Any]]:
    """``matching`` paid rows with a shipped row after every second one."""
    rows: list[dict[str, Any]] = []
    for index in range(matching):
        rows.append({"state": "paid", "priority": index % 4, "rank": index % 3})
        if index % 2:
            rows.append({"state": "shipped", "priority": index % 4})
    rows.append({"state": "shipped"})
    return rows


# -- every matching row, once -------------------------------------------------


@pytest.mark.parametrize("stream_with", STREAM_MODES)
@pytest.mark.parametrize("matching", [0, 1, BATCH - 1, BATCH, BATCH + 1, 3 * BATCH + 2])
def test_every_stream_mode_enqueues_each_matching_row_once_in_key_order(
    stub_broker: StubBroker, make_table: MakeTable, stream_with: str, matching: int
) -> None:
    Order = make_table()
    paid = add_orders(Order, interleaved(matching))
    declared = declare(Order, stream_with=stream_with)

    assert run_once(stub_broker, declared) == sorted(paid)


SORTS: dict[str, Callable[[Any], list[Any]]] = {
    "priority": lambda m: [m.priority],
    "priority desc": lambda m: [m.priority.desc()],
    "priority, rank": lambda m: [m.priority, m.rank],
    "priority desc, rank desc": lambda m: [m.priority.desc(), m.rank.desc()],
    "priority desc, rank": lambda m: [m.priority.desc(), m.rank],
    "priority, rank desc": lambda m: [m.priority, m.rank.desc()],
    "id desc": lambda m: [m.id.desc()],
}


def python_order(rows: list[pw.Model], sort: str) -> list[Any]:
    """The ids of ``rows`` in the order ``sort`` names, the id breaking ties."""

    def key(row: pw.Model) -> tuple[int, ...]:
        parts = []
        for term in sort.split(", "):
            name, _, direction = term.partition(" ")
            value = getattr(row, name)
            parts.append(-value if direction == "desc" else value)
        return (*parts, row.id)

    return [row.id for row in sorted(rows, key=key)]


@pytest.mark.parametrize("stream_with", STREAM_MODES)
@pytest.mark.parametrize("sort", list(SORTS))
def test_a_sort_enqueues_every_matching_row_once_in_sort_order(
    stub_broker: StubBroker, make_table: MakeTable, stream_with: str, sort: str
) -> None:
    Order = make_table()
    # Many ties in the sort fields, so pages end in the middle of a tie.
    add_orders(Order, interleaved(3 * BATCH + 2))
    declared = declare(Order, stream_with=stream_with, sort=SORTS[sort](Order))
    expected = python_order(list(Order.select().where(Order.state == "paid")), sort)

    assert run_once(stub_broker, declared) == expected


# -- record_limit ---------------------------------------------------------------


@pytest.mark.parametrize("stream_with", STREAM_MODES)
def test_record_limit_caps_each_run_and_the_next_runs_take_the_rest(
    stub_broker: StubBroker, make_table: MakeTable, stream_with: str
) -> None:
    Order = make_table()
    paid = add_orders(Order, interleaved(20))
    declared = declare(Order, stream_with=stream_with, record_limit=9)

    runs = [run_once(stub_broker, declared) for _ in range(4)]

    assert [len(keys) for keys in runs] == [9, 9, 2, 0]
    assert runs[0] + runs[1] + runs[2] == sorted(paid)


@pytest.mark.parametrize("stream_with", STREAM_MODES)
def test_rows_already_in_flight_do_not_count_toward_the_record_limit(
    stub_broker: StubBroker, make_table: MakeTable, stream_with: str
) -> None:
    Order = make_table()
    paid = sorted(add_orders(Order, interleaved(20)))
    declared = declare(Order, stream_with=stream_with, record_limit=5)
    busy = [paid[0], paid[2], paid[4], paid[5], paid[6]]
    for order in Order.select().where(Order.id.in_(busy)):
        assert run_trigger(order, declared) is not None
    take_enqueued(stub_broker, declared)

    assert run_once(stub_broker, declared) == [key for key in paid if key not in busy][:5]


# -- primary key types ------------------------------------------------------------


@pytest.mark.parametrize("stream_with", STREAM_MODES)
@pytest.mark.parametrize("sorted_by", ["key", "priority desc"])
def test_a_composite_primary_key_is_streamed_and_carried_whole(
    stub_broker: StubBroker, make_table: MakeTable, stream_with: str, sorted_by: str
) -> None:
    Order = make_table({
        "region": pw.CharField(max_length=8),
        "number": pw.IntegerField(),
        "state": pw.CharField(default="paid"),
        "priority": pw.IntegerField(default=0),
    }, primary_key=pw.CompositeKey("region", "number"))
    rows = []
    for index in range(3 * BATCH + 2):
        rows.append({"region": ["ap", "eu", "us"][index % 3], "number": index // 3,
                     "priority": index % 4, "state": "paid"})
        rows.append({"region": "eu", "number": 100 + index, "state": "shipped"})
    Order.insert_many(rows).execute()
    paid = [row for row in rows if row["state"] == "paid"]
    if sorted_by == "key":
        declared = declare(Order, stream_with=stream_with)
        paid.sort(key=lambda row: (row["region"], row["number"]))
    else:
        declared = declare(Order, stream_with=stream_with, sort=[Order.priority.desc()])
        paid.sort(key=lambda row: (-row["priority"], row["region"], row["number"]))

    keys = run_once(stub_broker, declared)

    assert keys == [[row["region"], row["number"]] for row in paid]


@pytest.mark.parametrize("stream_with", STREAM_MODES)
def test_a_uuid_primary_key_is_streamed_in_key_order(
    stub_broker: StubBroker, make_table: MakeTable, stream_with: str
) -> None:
    Order = make_table({
        "id": pw.UUIDField(primary_key=True, default=uuid.uuid4),
        "state": pw.CharField(default="paid"),
    })
    ids = [uuid.uuid4() for _ in range(3 * BATCH + 2)]
    Order.insert_many([{"id": key, "state": "paid"} for key in ids]).execute()
    Order.insert_many([{"id": uuid.uuid4(), "state": "shipped"} for _ in ids]).execute()
    declared = declare(Order, stream_with=stream_with)

    assert run_once(stub_broker, declared) == [str(key) for key in sorted(ids)]


@pytest.mark.parametrize("stream_with", STREAM_MODES)
def test_a_string_primary_key_is_streamed_in_key_order(
    stub_broker: StubBroker, make_table: MakeTable, stream_with: str
) -> None:
    Order = make_table({
        "code": pw.CharField(primary_key=True, max_length=16),
        "state": pw.CharField(default="paid"),
    })
    codes = [f"o{index * 37 % 101:03d}x" for index in range(3 * BATCH + 2)]
    Order.insert_many([{"code": code, "state": "paid"} for code in codes]).execute()
    Order.insert_many([{"code": f"z{index}", "state": "shipped"} for index in range(9)]).execute()
    declared = declare(Order, stream_with=stream_with)

    assert run_once(stub_broker, declared) == sorted(codes)


# -- rows that change while a run streams -----------------------------------------


def in_another_connection(database: pw.Database, work: Callable[[], None]) -> None:
    """Run ``work`` in a thread of its own, so on a connection of its own."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with database.connection_context():
                work()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the concurrent writer did not finish"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("stream_with", STREAM_MODES)
@pytest.mark.parametrize("sorted_by", ["key", "priority desc"])
def test_rows_that_change_while_a_run_streams_are_neither_skipped_nor_enqueued_twice(
    stub_broker: StubBroker,
    middleware: TriggersMiddleware,
    make_table: MakeTable,
    database: pw.Database,
    monkeypatch: pytest.MonkeyPatch,
    stream_with: str,
    sorted_by: str,
) -> None:
    Order = make_table()
    initial_paid = sorted(add_orders(Order, interleaved(5 * BATCH)))
    initial_shipped = [order.id for order in
                       Order.select(Order.id).where(Order.state != "paid").order_by(Order.id)]
    sort = [Order.priority.desc()] if sorted_by != "key" else None
    declared = declare(Order, stream_with=stream_with, sort=sort)
    ever_paid = set(initial_paid)
    seen: list[int] = []

    def change_rows() -> None:
        # What workers and users do between two pages: new rows arrive,
        # rows already enqueued get processed, rows not reached yet stop
        # matching, start matching, or change in ways the filter ignores.
        new = [Order.create(state="paid", priority=3), Order.create(state="paid"),
               Order.create(state="shipped")]
        ever_paid.update(order.id for order in new[:2])
        still_paid = {key for (key,) in
                      Order.select(Order.id).where(Order.state == "paid").tuples()}
        processed = [key for key in seen if key in still_paid][:2]
        unreached = [key for key in reversed(initial_paid)
                     if key not in seen and key in still_paid]
        revived = [key for key in reversed(initial_shipped) if key not in ever_paid][:1]
        ever_paid.update(revived)
        Order.update(state="shipped").where(Order.id.in_(processed + unreached[:1])).execute()
        Order.update(state="paid").where(Order.id.in_(revived)).execute()
        Order.update(note="edited").where(Order.id.in_(unreached[1:2])).execute()

    backend = middleware.backend
    claim = backend.claim

    def claim_then_change(key: str, items: Any, **options: Any) -> list[bool]:
        claimed = claim(key, items, **options)
        seen.extend(json.loads(item) for item in items)
        in_another_connection(database, change_rows)
        return claimed

    monkeypatch.setattr(backend, "claim", claim_then_change)
    keys = run_once(stub_broker, declared)
    monkeypatch.undo()

    paid_now = {key for (key,) in Order.select(Order.id).where(Order.state == "paid").tuples()}
    assert len(keys) == len(set(keys)), "a row was enqueued twice"
    assert set(initial_paid) & paid_now <= set(keys), "a row that kept matching was skipped"
    assert set(keys) <= ever_paid


# -- what a run skips ---------------------------------------------------------------


def test_rows_with_a_message_in_flight_are_skipped(
    stub_broker: StubBroker, make_table: MakeTable
) -> None:
    Order = make_table()
    paid = sorted(add_orders(Order, interleaved(2 * BATCH)))
    declared = declare(Order)
    for order in Order.select().where(Order.id.in_(paid[:3])):
        run_trigger(order, declared)
    assert take_enqueued(stub_broker, declared) == paid[:3]

    assert run_once(stub_broker, declared) == paid[3:]
    assert run_once(stub_broker, declared) == []


def test_rows_done_by_a_trigger_once_trigger_are_not_enqueued_again(
    stub_broker: StubBroker, make_table: MakeTable
) -> None:
    Order = make_table()
    paid = add_orders(Order, interleaved(BATCH + 2))
    # The action leaves the rows paid, so only the done marks keep them out.
    declared = declare(Order, trigger_once=True)
    result = schedule_and_run_triggers(declared)
    assert result.success == 1 + len(paid)

    late = Order.create(state="paid")

    assert run_once(stub_broker, declared) == [late.id]


def test_rows_done_by_an_ordinary_trigger_are_enqueued_again_while_they_match(
    stub_broker: StubBroker, make_table: MakeTable
) -> None:
    Order = make_table()
    paid = add_orders(Order, interleaved(BATCH + 2))
    declared = declare(Order)
    assert schedule_and_run_triggers(declared).success == 1 + len(paid)

    assert run_once(stub_broker, declared) == sorted(paid)


def test_a_callable_where_is_evaluated_at_every_run(
    stub_broker: StubBroker, make_table: MakeTable
) -> None:
    Order = make_table()
    for priority in range(10):
        Order.create(state="paid", priority=priority)
    cutoff = [3]
    declared = declare(Order, where=lambda: Order.priority < cutoff[0],
                       sort=[Order.priority])

    first = run_once(stub_broker, declared)
    cutoff[0] = 6
    second = run_once(stub_broker, declared)

    assert [Order.get_by_id(key).priority for key in first] == [0, 1, 2]
    assert [Order.get_by_id(key).priority for key in second] == [3, 4, 5]


# -- broker round trips on Redis ------------------------------------------------------


@pytest.fixture
def redis_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisBroker]:
    """A RedisBroker and RedisBackend whose keys no other test touches."""
    url = require_service("redis")
    tag = f"sched-test-{uuid.uuid4().hex[:12]}"
    broker = RedisBroker(url=url, namespace=tag)
    backend = RedisBackend(client=broker.client, prefix=tag + "-marks")
    broker.add_middleware(TriggersMiddleware(backend=backend, run_cron=False))
    # Set for this test only; monkeypatch puts the previous broker back.
    monkeypatch.setattr(dramatiq.broker, "global_broker", broker)
    yield broker
    for key in broker.client.scan_iter(match=tag + "*"):
        broker.client.delete(key)
    broker.close()


def test_each_page_costs_one_claim_and_one_pipeline_on_redis(
    redis_broker: RedisBroker, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The round trips do not depend on the database: SQLite is enough.
    Order = new_model(pw.SqliteDatabase(str(tmp_path / "redis.db")))
    paid = add_orders(Order, interleaved(3 * BATCH + 2))
    declared = declare(Order)
    backend = next(m for m in redis_broker.middleware
                   if isinstance(m, TriggersMiddleware)).backend
    claims: list[int] = []
    pipelines: list[int] = []
    claim = backend.claim
    execute = redis.client.Pipeline.execute

    def counted_claim(key: str, items: Any, **options: Any) -> list[bool]:
        claims.append(len(items))
        return claim(key, items, **options)

    def counted_execute(pipeline: Any, *args: Any, **kwargs: Any) -> Any:
        # The messages of the page written by this pipeline.
        pipelines.append(sum(len(command[0]) - 2 for command in pipeline.command_stack
                             if command[0][0] == "RPUSH"))
        return execute(pipeline, *args, **kwargs)

    monkeypatch.setattr(backend, "claim", counted_claim)
    monkeypatch.setattr(redis.client.Pipeline, "execute", counted_execute)

    assert run_scheduler(declared) == len(paid)
    assert claims == [BATCH, BATCH, BATCH, 2]
    assert pipelines == [BATCH, BATCH, BATCH, 2]
    assert redis_broker.client.llen(f"{redis_broker.namespace}:{declared.queue}") == len(paid)

    # A second run finds every row in flight: one claim a page, nothing sent.
    assert run_scheduler(declared) == 0
    assert claims[4:] == [BATCH, BATCH, BATCH, 2]
    assert pipelines[4:] == []
