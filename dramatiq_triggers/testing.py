"""Test helpers: run triggers inline on a ``StubBroker`` and check what they
enqueued, against a real database (SQLite or PostgreSQL).

Messages are processed in the calling thread, through every middleware of
the broker, so a test sees the same actor restoring, retries and in-flight
marks as a worker, without threads and without waiting.
"""

from __future__ import annotations

import dataclasses
import queue as queue_module
import time
from collections.abc import Iterable, Sequence
from typing import Any, Union

import dramatiq
import peewee as pw
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.middleware import SkipMessage

from .context import UNSET
from .declarations import (
    ScheduledAction,
    Trigger,
    resolve_trigger,
    scheduled_actions_of,
    triggers_of,
)
from .enqueue import store_actor
from .records import decode_primary_key, encode_primary_key, primary_key_condition

__all__ = [
    "RunResult",
    "assert_triggered",
    "assert_would_schedule",
    "refute_triggered",
    "refute_would_schedule",
    "schedule_and_run_triggers",
]

Target = Union[  # noqa: UP007 - a runtime alias must work on Python 3.10 too
    type[pw.Model], tuple[type[pw.Model], str], Trigger, ScheduledAction, Sequence[Any]
]


@dataclasses.dataclass(frozen=True)
class RunResult:
    """How the jobs run by ``schedule_and_run_triggers`` ended, schedulers included.

    Attributes:
      success: jobs that completed (an error handled by ``on_error`` counts here).
      failure: attempts that failed and will be retried (the retry, due
        later, is not run).
      discard: jobs whose last attempt failed.
      cancelled: jobs that ended as cancelled (the record no longer matched,
        ``CancelJob``, ``TriggerNoLongerApplies``, a paused trigger).
      snoozed: jobs that raised ``SnoozeJob``.
      queues_not_drained: the target's queues that still hold messages due
        later (retries, snoozes, delayed messages) when the drain stopped.
    """

    success: int = 0
    failure: int = 0
    discard: int = 0
    cancelled: int = 0
    snoozed: int = 0
    queues_not_drained: tuple[str, ...] = ()


def _declarations(
    target: Target, *, triggers: bool, scheduled_actions: bool
) -> list[Trigger | ScheduledAction]:
    """The declarations ``target`` names; a scheduled action named on its
    own (not through its model) is included whatever ``scheduled_actions``
    says."""
    found: list[Trigger | ScheduledAction] = []
    if isinstance(target, (Trigger, ScheduledAction)):
        found.append(target)
    elif isinstance(target, type) and issubclass(target, pw.Model):
        if triggers:
            found.extend(triggers_of(target))
        if scheduled_actions:
            found.extend(scheduled_actions_of(target))
    elif (isinstance(target, tuple) and len(target) == 2 and isinstance(target[0], type)
          and isinstance(target[1], str)):
        model, name = target
        try:
            found.append(resolve_trigger(model, name))
        except LookupError:
            actions = [a for a in scheduled_actions_of(model) if a.name == name]
            if not actions:
                raise
            found.extend(actions)
    elif isinstance(target, (list, tuple)):
        for item in target:
            for declaration in _declarations(item, triggers=triggers,
                                             scheduled_actions=scheduled_actions):
                if declaration not in found:
                    found.append(declaration)
    else:
        raise TypeError(
            "schedule_and_run_triggers takes a model, a (model, name) pair, a Trigger, a "
            f"ScheduledAction or a list of those, not {target!r}."
        )
    return found


def _stub_broker(declaration: Trigger | ScheduledAction) -> StubBroker:
    broker = declaration.broker
    if not isinstance(broker, StubBroker):
        raise TypeError(
            f"The testing helpers need a StubBroker; {declaration!r} is declared on a "
            f"{type(broker).__name__}."
        )
    return broker


def schedule_and_run_triggers(
    target: Target,
    *,
    actor: Any = UNSET,
    triggers: bool = True,
    scheduled_actions: bool = False,
    drain: bool = True,
) -> RunResult:
    """Run the schedulers of the target's triggers, then drain their queues.

    ``target`` is a model, a ``(model, name)`` pair, a ``Trigger``, a
    ``ScheduledAction`` or a list of those.  The schedulers of the triggers
    that have a cron run first (and, with ``scheduled_actions=True``, the
    scheduled actions), as ``actor`` when given; then, unless
    ``drain=False``, every queue of the target's triggers is drained, those
    without a cron included.  Retries that are due now run within the
    drain; those due later stay queued.

    Returns:
      a ``RunResult`` counting every job run, schedulers included.
    """
    declarations = _declarations(target, triggers=triggers,
                                 scheduled_actions=scheduled_actions)
    counts: dict[str, Any] = dict.fromkeys(
        ("success", "failure", "discard", "cancelled", "snoozed"), 0
    )
    if not declarations:
        return RunResult()
    broker = _stub_broker(declarations[0])

    for declaration in declarations:
        if declaration.state != "active":
            continue
        if isinstance(declaration, Trigger):
            if declaration.cron is None:
                continue
            options = store_actor(declaration, actor)
            message = declaration.scheduler_actor.message_with_options(**options)
        else:
            options = store_actor(declaration, actor)
            message = declaration.actor.message_with_options(**options)
        _count(counts, process_message(broker, message))

    queues: list[str] = []
    for declaration in declarations:
        if isinstance(declaration, Trigger):
            names = [declaration.scheduler_queue, declaration.queue]
        else:
            names = [declaration.queue]
        queues.extend(name for name in names if name not in queues)
    if not drain:
        return RunResult(**counts)

    while True:
        ran = False
        for name in queues:
            for message in _take(broker, name):
                _count(counts, process_message(broker, message))
                ran = True
        if not ran:
            break
    waiting = tuple(name for name in queues if broker.queues[dq_name(name)].qsize())
    return RunResult(**counts, queues_not_drained=waiting)


def _take(broker: StubBroker, queue_name: str) -> Iterable[Message[Any]]:
    """The messages of a queue, and those of its delay queue that are due."""
    ready = broker.queues[queue_name]
    while True:
        try:
            data = ready.get_nowait()
        except queue_module.Empty:
            break
        ready.task_done()
        yield Message.decode(data)

    delayed = broker.queues[dq_name(queue_name)]
    later: list[Message[Any]] = []
    due: list[Message[Any]] = []
    now = current_millis()
    while True:
        try:
            data = delayed.get_nowait()
        except queue_module.Empty:
            break
        delayed.task_done()
        message = Message.decode(data)
        (due if message.options.get("eta", 0) <= now else later).append(message)
    for message in later:
        delayed.put(message.encode())
    for message in due:
        # Delayed messages carry the delay queue's name; run them as the
        # worker would, on their own queue.
        yield message.copy(queue_name=queue_name)


def process_message(broker: dramatiq.Broker, message: Message[Any]) -> str:
    """Process one message in this thread, through the broker's middleware.

    Returns how it ended: "success", "failure", "discard", "cancelled" or
    "snoozed".
    """
    proxy = MessageProxy(message)
    try:
        broker.emit_before("process_message", proxy)
        result = broker.get_actor(message.actor_name)(*message.args, **message.kwargs)
        broker.emit_after("process_message", proxy, result=result)
    except SkipMessage:
        broker.emit_after("skip_message", proxy)
    except Exception as error:
        proxy.stuff_exception(error)
        broker.emit_after("process_message", proxy, exception=error)
    signal = "nack" if proxy.failed else "ack"
    broker.emit_before(signal, proxy)
    broker.emit_after(signal, proxy)
    proxy.clear_exception()

    job = getattr(proxy, "_dramatiq_triggers_job", None)
    outcome = job.outcome if job is not None else None
    if outcome == "retry":
        return "failure"
    if outcome == "failed" or proxy.failed:
        return "discard"
    if outcome in ("cancelled", "snoozed", "success"):
        return outcome
    return "success"


def _count(counts: dict[str, int], outcome: str) -> None:
    counts[outcome] += 1


def _queued(record: pw.Model, trigger: Trigger | str) -> tuple[Trigger, list[Message[Any]]]:
    declared = resolve_trigger(type(record), trigger)
    broker = _stub_broker(declared)
    key = encode_primary_key(declared.model, record)
    found = []
    for name in (declared.queue, dq_name(declared.queue)):
        for data in list(broker.queues[name].queue):
            message = Message.decode(data)
            if message.actor_name == declared.worker_actor_name and message.args[0] == key:
                found.append(message)
    return declared, found


def assert_triggered(record: pw.Model, trigger: Trigger | str) -> Message[Any]:
    """Assert a worker message of ``trigger`` for ``record`` is queued; return it."""
    declared, found = _queued(record, trigger)
    if not found:
        raise AssertionError(
            f"Expected a message of {declared!r} for {type(record).__name__} "
            f"{encode_primary_key(declared.model, record)!r} to be enqueued; none is."
        )
    return found[0]


def refute_triggered(record: pw.Model, trigger: Trigger | str) -> None:
    """Assert no worker message of ``trigger`` for ``record`` is queued."""
    declared, found = _queued(record, trigger)
    if found:
        raise AssertionError(
            f"Expected no message of {declared!r} for {type(record).__name__} "
            f"{encode_primary_key(declared.model, record)!r}; {len(found)} enqueued."
        )


def _would_schedule(record: pw.Model, trigger: Trigger | str) -> tuple[Trigger, bool]:
    declared = resolve_trigger(type(record), trigger)
    model = declared.model
    key = decode_primary_key(model, encode_primary_key(model, record))
    query = model.select().where(primary_key_condition(model, key))
    where = declared.where_expression()
    if where is not None:
        query = query.where(where)
    return declared, query.exists()


def assert_would_schedule(record: pw.Model, trigger: Trigger | str) -> None:
    """Assert the stored ``record`` matches ``trigger``'s ``where`` now."""
    declared, matches = _would_schedule(record, trigger)
    if not matches:
        raise AssertionError(f"Expected {type(record).__name__} "
                             f"{encode_primary_key(declared.model, record)!r} to match the "
                             f"where of {declared!r}; it does not.")


def refute_would_schedule(record: pw.Model, trigger: Trigger | str) -> None:
    """Assert the stored ``record`` does not match ``trigger``'s ``where`` now."""
    declared, matches = _would_schedule(record, trigger)
    if matches:
        raise AssertionError(f"Expected {type(record).__name__} "
                             f"{encode_primary_key(declared.model, record)!r} not to match "
                             f"the where of {declared!r}; it does.")


def wait_for(condition: Any, *, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``condition()`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
