"""The scheduler: streams the primary keys of the rows that match a trigger
and enqueues one worker message per row, a page at a time.

Only keys (and sort fields) are read, page by page, so memory stays flat
whatever the number of matching rows.  Each page costs one backend round
trip for the in-flight marks and one broker pipeline for the messages.
Keyset pages each read the database as it is; offset pages are all read in
one snapshot, so rows that change during a run cannot shift them.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, cast

import peewee as pw

from .backends import Backend
from .context import current_job
from .declarations import Trigger
from .enqueue import ACTOR_OPTION, enqueue_messages, message_ids, worker_message
from .records import done_item, json_value, mark_item, primary_key_fields, real_database

logger = logging.getLogger("dramatiq_triggers.scheduler")

Row = tuple[Any, ...]


def make_scheduler_function(holder: dict[str, Trigger]) -> Callable[[], None]:
    def run_trigger_scheduler() -> None:
        run_scheduler(holder["trigger"])

    return run_trigger_scheduler


def run_scheduler(trigger: Trigger) -> int:
    """Enqueue the worker messages of every row that matches ``trigger`` now.

    Returns the number of messages sent.
    """
    from .middleware import middleware_of
    from .worker import attempt_failed, flow_level

    job = current_job()
    level = flow_level(trigger)
    if job is not None and trigger.state != "active":
        logger.log(level, "Cancelling the scheduler of %r: the trigger is %s.", trigger,
                   trigger.state)
        job.outcome = "cancelled"
        return 0

    middleware = middleware_of(trigger.broker)
    from .worker import _FAILURES

    try:
        sent, scanned = _stream_and_enqueue(trigger, middleware, job)
    except _FAILURES as error:
        if job is None:
            raise
        attempt_failed(_SchedulerView(trigger), job, error, None)
        return 0
    if job is not None:
        job.outcome = "success"
    logger.log(level, "Scheduler of %r enqueued %d of %d matching rows.", trigger, sent, scanned)
    return sent


class _SchedulerView:
    """The scheduler's own retry options, shaped for the worker's error path."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger
        self.log_errors = trigger.log_errors
        self.log_final_error = trigger.log_final_error
        self.backoff = trigger.backoff
        self.debug = trigger.debug
        self.broker = trigger.broker

    def __repr__(self) -> str:
        return f"the scheduler of {self.trigger!r}"


def _stream_and_enqueue(trigger: Trigger, middleware: Any, job: Any) -> tuple[int, int]:
    model = trigger.model
    pk_fields = primary_key_fields(model)
    orderings = trigger.sort_orderings()
    columns = [field for field, _ in orderings]
    # By name: peewee fields overload ==, so list.index would match any field.
    names = [field.name for field in columns]
    key_positions = [names.index(field.name) for field in pk_fields]
    composite = len(pk_fields) > 1
    limit = trigger.record_limit
    backend = middleware.backend
    broker = trigger.broker

    # The actor is stored once per run, not once per row.
    options: dict[str, Any] = {}
    if job is not None:
        from .context import actor_for_enqueue
        from .enqueue import store_actor

        options = store_actor(trigger, actor_for_enqueue())
        if ACTOR_OPTION not in options:
            options = {}

    sent = 0
    scanned = 0
    database = real_database(model)
    with contextlib.ExitStack() as stack:
        if database.is_closed():
            stack.enter_context(database.connection_context())
        if trigger.stream_with == "offset":
            stack.enter_context(_snapshot(database))
        pages = stack.enter_context(contextlib.closing(stream_rows(trigger, columns, orderings)))
        for page in pages:
            scanned += len(page)
            keys = [_key(row, key_positions, composite) for row in page]
            room = None if limit is None else limit - sent
            chosen = _claim(trigger, backend, middleware.in_flight_ttl,
                            list(zip(keys, message_ids(len(keys)))), room)
            messages = [worker_message(trigger, key, {}, options, message_id=message_id)
                        for key, message_id in chosen]
            try:
                enqueue_messages(broker, messages)
            except BaseException:
                backend.release(trigger.worker_actor_name,
                                [mark_item(key, None) for key, _ in chosen],
                                [message_id for _, message_id in chosen])
                raise
            sent += len(messages)
            if limit is not None and sent >= limit:
                break
    return sent, scanned


def _claim(
    trigger: Trigger, backend: Backend, ttl: int, rows: list[tuple[Any, str]], room: int | None
) -> list[tuple[Any, str]]:
    """The ``(key, message id)`` pairs of a page whose in-flight marks this
    run took (each owned by its message id), ``room`` at most.

    A page costs one claim.  Only the page where ``record_limit`` is reached
    may cost two claims and a release: its first ``room`` rows are claimed,
    and when some of them are in flight, the rest of the page is claimed at
    once and the marks beyond the limit are given back.  Claiming a few rows
    at a time instead would cost a round trip per row when most rows are in
    flight, the usual state of a limited trigger's later runs.
    """

    def take(some: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
        items = [mark_item(key, None) for key, _ in some]
        done = [done_item(key) for key, _ in some] if trigger.trigger_once else None
        claimed = backend.claim(trigger.worker_actor_name, items, ttl=ttl, done=done,
                                owners=[message_id for _, message_id in some])
        return [row for row, ok in zip(some, claimed) if ok]

    if room is None or room >= len(rows):
        return take(rows)
    chosen = take(rows[:room])
    if len(chosen) < room:
        chosen += take(rows[room:])
        surplus = chosen[room:]
        if surplus:
            backend.release(trigger.worker_actor_name,
                            [mark_item(key, None) for key, _ in surplus],
                            [message_id for _, message_id in surplus])
        chosen = chosen[:room]
    return chosen


@contextlib.contextmanager
def _snapshot(database: pw.Database) -> Iterator[None]:
    """One read transaction around every page of an ``offset`` run.

    An offset counts rows, so a row before it that stops matching (a worker
    has just processed it) would shift every later page and skip a row.
    Inside one transaction every page sees the rows as they were at the
    first read: REPEATABLE READ on PostgreSQL and MySQL, a deferred
    transaction on SQLite (a snapshot in WAL mode; in rollback-journal mode
    it keeps writers from committing until the run ends, as a ``full_read``
    cursor does).
    """
    if database.in_transaction():
        # The caller's transaction decides what the pages see.
        yield
        return
    if isinstance(database, (pw.PostgresqlDatabase, pw.MySQLDatabase)):
        transaction = database.atomic(isolation_level="REPEATABLE READ")
    else:
        transaction = database.atomic()
    with transaction:
        yield


def _key(row: Row, positions: list[int], composite: bool) -> Any:
    if composite:
        return [json_value(row[position]) for position in positions]
    return json_value(row[positions[0]])


def stream_rows(
    trigger: Trigger, columns: list[pw.Field], orderings: list[tuple[pw.Field, bool]]
) -> Generator[list[Row], None, None]:
    """Pages of ``columns`` values of the matching rows, in sort order."""
    model = trigger.model
    where = trigger.where_expression()
    query = model.select(*columns)
    if where is not None:
        query = query.where(where)
    query = query.order_by(*[field.desc() if descending else field.asc()
                             for field, descending in orderings]).tuples()
    batch = trigger.stream_batch_size

    if trigger.stream_with == "full_read":
        database = real_database(model)
        if isinstance(database, pw.PostgresqlDatabase):
            yield from _server_side_pages(database, query, columns, batch)
            return
        page: list[Row] = []
        row: Row
        for row in query.iterator():
            page.append(row)
            if len(page) >= batch:
                yield page
                page = []
        if page:
            yield page
        return

    if trigger.stream_with == "offset":
        offset = 0
        while True:
            rows: list[Row] = list(cast(Iterable[Row], query.limit(batch).offset(offset)))
            if rows:
                yield rows
            if len(rows) < batch:
                return
            offset += batch

    last: Row | None = None
    while True:
        page_query = query if last is None else query.where(_after(orderings, last))
        page_rows: list[Row] = list(cast(Iterable[Row], page_query.limit(batch)))
        if page_rows:
            yield page_rows
        if len(page_rows) < batch:
            return
        last = page_rows[-1]


def _server_side_pages(
    database: pw.PostgresqlDatabase, query: Any, columns: list[pw.Field], batch: int
) -> Generator[list[Row], None, None]:
    """Pages of one query read through a PostgreSQL server-side cursor.

    The driver's ordinary cursor would receive the whole result before the
    first row; a named cursor fetches ``batch`` rows at a time, so a
    ``full_read`` run's memory stays flat too.  peewee runs the drivers in
    autocommit mode, where only a cursor ``WITH HOLD`` may be named; the
    server keeps its result until the cursor is closed.
    """
    sql, params = query.sql()
    converters = [field.python_value for field in columns]
    name = f"dramatiq_triggers_{uuid.uuid4().hex}"
    cursor = database.connection().cursor(name=name, withhold=True)
    try:
        cursor.execute(sql, params)
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                return
            yield [tuple(convert(value) for convert, value in zip(converters, row))
                   for row in rows]
    finally:
        cursor.close()


def _after(orderings: list[tuple[pw.Field, bool]], last: Row) -> pw.Expression:
    """Rows strictly after ``last`` in the sort order (the keyset condition)."""
    values = [pw.Value(value, converter=field.db_value) for (field, _), value
              in zip(orderings, last)]
    directions = {descending for _, descending in orderings}
    if len(orderings) == 1 or len(directions) == 1:
        fields = [field for field, _ in orderings]
        descending = directions.pop()
        if len(fields) == 1:
            return fields[0] < values[0] if descending else fields[0] > values[0]
        left, right = pw.Tuple(*fields), pw.Tuple(*values)
        return left < right if descending else left > right
    # Mixed directions: (a after x) OR (a = x AND b after y) OR ...
    condition: pw.Expression | None = None
    equal: pw.Expression | None = None
    for (field, descending), value in zip(orderings, values):
        step = field < value if descending else field > value
        term = step if equal is None else equal & step
        condition = term if condition is None else condition | term
        same = field == value
        equal = same if equal is None else equal & same
    assert condition is not None
    return condition
