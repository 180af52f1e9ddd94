"""The acting user and the trigger interaction, carried in context variables.

``acting_as`` marks the messages enqueued inside it with an actor; the
middleware restores that actor, and the job being processed, around each
message so application code can ask ``current_actor()``, ``in_trigger()``
and ``current_job()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .declarations import ScheduledAction, Trigger

#: Sentinel meaning "no actor was given", as opposed to an actor of None.
UNSET: Any = object()

_acting_as: ContextVar[Any] = ContextVar("dramatiq_triggers_acting_as", default=UNSET)
_current_actor: ContextVar[Any] = ContextVar("dramatiq_triggers_current_actor", default=None)
#: The actor looked up from the message, before any default_actor: the one
#: that messages enqueued while it is processed carry on.
_restored_actor: ContextVar[Any] = ContextVar("dramatiq_triggers_restored_actor", default=None)
_current_job: ContextVar[Job | None] = ContextVar("dramatiq_triggers_current_job", default=None)
_in_trigger: ContextVar[bool] = ContextVar("dramatiq_triggers_in_trigger", default=False)


@dataclasses.dataclass
class Job:
    """What is known about the trigger job being processed.

    Attributes:
      trigger: the ``Trigger`` or ``ScheduledAction`` the job belongs to.
      kind: ``"worker"``, ``"scheduler"`` or ``"scheduled_action"``.
      primary_key: the record's primary key for a worker job, as the
        message carries it (a list for a composite key), else None.
      attempt: the attempt number, starting at 1.
      max_attempts: how many attempts the job gets.
      message_id: the Dramatiq message id.
    """

    trigger: Trigger | ScheduledAction
    kind: str
    primary_key: Any
    attempt: int
    max_attempts: int
    message_id: str
    #: How the job ended, as the middleware reports it: "success",
    #: "cancelled", "snoozed", "retry" or "failed".  Set by the worker.
    outcome: str | None = None
    #: Milliseconds until the message runs again, for a retry or a snooze.
    delay: int | None = None

    @property
    def last_attempt(self) -> bool:
        """True when this attempt is the job's last one."""
        return self.attempt >= self.max_attempts


@contextlib.contextmanager
def acting_as(actor: Any) -> Iterator[None]:
    """Carry ``actor`` in every message enqueued inside the block.

    The middleware stores it through the configured ``ActorPersister``
    and restores it for ``current_actor()`` when the message is processed.
    ``acting_as(None)`` enqueues without an actor, even inside trigger work.
    """
    token = _acting_as.set(actor)
    try:
        yield
    finally:
        _acting_as.reset(token)


def current_actor() -> Any:
    """The actor restored for the message being processed, else None."""
    return _current_actor.get()


def in_trigger() -> bool:
    """True while code runs inside a scheduler, worker, ``on_error`` or
    scheduled action, and only there."""
    return _in_trigger.get()


def current_job() -> Job | None:
    """Details of the trigger job being processed, else None."""
    return _current_job.get()


def actor_for_enqueue() -> Any:
    """The actor a message enqueued now should carry, or ``UNSET``.

    Inside ``acting_as`` that actor; otherwise the actor looked up for the
    message being processed, so that work started on a user's behalf keeps
    acting for the same user.  A trigger's ``default_actor`` is not carried
    on: it is the default of that trigger's messages only.
    """
    actor = _acting_as.get()
    if actor is not UNSET:
        return actor
    actor = _restored_actor.get()
    return UNSET if actor is None else actor
