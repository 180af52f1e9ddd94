"""The scheduler: streams the primary keys of the rows that match a trigger
and enqueues one worker message per row, a page at a time.

Only keys (and sort fields) are read, page by page, so memory stays flat
whatever the number of matching rows.  Each page costs one backend round
trip for the in-flight marks and one broker pipeline for the messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import peewee as pw

from .context import current_job
from .declarations import Trigger
from .enqueue import ACTOR_OPTION, _worker_message, enqueue_messages
from .records import done_item, mark_item, primary_key_fields, real_database

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
    from .worker import _attempt_failed, flow_level

    job = current_job()
    level = flow_level(trigger)
    if job is not None and trigger.state != "active":
        logger.log(level, "Cancelling the scheduler of %r: the trigger is %s.", trigger,
                   trigger.state)
        job.outcome = "cancelled"
        return 0

    middleware = middleware_of(trigger.worker_actor.broker)
    try:
        sent, scanned = _stream_and_enqueue(trigger, middleware, job)
    except Exception as error:
        if job is None:
            raise
        _attempt_failed(_SchedulerView(trigger), job, error, None)
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
        self.worker_actor = trigger.worker_actor

    def __repr__(self) -> str:
        return f"the scheduler of {self.trigger!r}"


def _stream_and_enqueue(trigger: Trigger, middleware: Any, job: Any) -> tuple[int, int]:
    model = trigger.model
    pk_fields = primary_key_fields(model)
    orderings = trigger.sort_orderings()
    columns = [field for field, _ in orderings]
    key_positions = [columns.index(field) for field in pk_fields]
    composite = len(pk_fields) > 1
    limit = trigger.record_limit
    backend = middleware.backend
    broker = trigger.worker_actor.broker

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
    with database.connection_context() if database.is_closed() else _nothing():
        for page in stream_rows(trigger, columns, orderings):
            scanned += len(page)
            rows = page
            while rows:
                room = None if limit is None else limit - sent
                if room is not None and room <= 0:
                    return sent, scanned
                chunk, rows = (rows, []) if room is None else (rows[:room], rows[room:])
                keys = [_key(row, key_positions, composite) for row in chunk]
                items = [mark_item(key, None) for key in keys]
                done = [done_item(key) for key in keys] if trigger.trigger_once else None
                claimed = backend.claim(trigger.worker_actor_name, items,
                                        ttl=middleware.in_flight_ttl, done=done)
                messages = [_worker_message(trigger, key, {}, options)
                            for key, ok in zip(keys, claimed) if ok]
                try:
                    enqueue_messages(broker, messages)
                except BaseException:
                    backend.release(trigger.worker_actor_name,
                                    [item for item, ok in zip(items, claimed) if ok])
                    raise
                sent += len(messages)
            if limit is not None and sent >= limit:
                break
    return sent, scanned


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _key(row: Row, positions: list[int], composite: bool) -> Any:
    from .records import _to_json

    if composite:
        return [_to_json(row[position]) for position in positions]
    return _to_json(row[positions[0]])


def stream_rows(
    trigger: Trigger, columns: list[pw.Field], orderings: list[tuple[pw.Field, bool]]
) -> Iterator[list[Row]]:
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
