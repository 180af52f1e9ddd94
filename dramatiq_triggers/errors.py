"""Exceptions of dramatiq_triggers: declaration mistakes, and the signals an
action raises to end its job in a particular way."""

from __future__ import annotations

from dramatiq import Retry
from dramatiq.middleware import MiddlewareError


class TriggersError(Exception):
    """Base class for the errors of this package."""


class TriggerDeclarationError(TriggersError, ValueError):
    """A trigger or scheduled action is declared wrongly.

    The message names the model, the trigger and how to fix it.  It is
    raised while the module that declares the trigger is imported.
    """


class TriggerNoLongerApplies(TriggersError):
    """Raised from an action when its record no longer needs the work.

    The job ends as cancelled: no retry, no ``on_error``, nothing logged
    above debug.
    """


class CancelJob(TriggersError):
    """Raised from an action to end its job as cancelled, with a reason."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class SnoozeJob(TriggersError):
    """Raised from an action to run the job again later.

    The message is enqueued again after ``seconds``; the attempt that
    snoozed does not count against ``max_attempts``.
    """

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"SnoozeJob needs a delay of zero or more seconds, not {seconds!r}.")
        super().__init__(f"snoozed for {seconds} seconds")
        self.seconds = seconds


class ActorLookupError(MiddlewareError, Retry):
    """The actor stored in a message could not be looked up.

    It is an error of the attempt that processes the message, so Dramatiq
    retries it like any other failure, after the trigger's ``backoff``
    (``delay``, in milliseconds; None for Dramatiq's own backoff).  It is
    a ``MiddlewareError`` so that the broker lets it out of
    ``before_process_message``.
    """

    def __init__(self, message: str, delay: int | None = None) -> None:
        Retry.__init__(self, message, delay=delay)


class ActorStoreError(MiddlewareError, TypeError):
    """The actor of ``acting_as`` could not be stored in a message.

    Raised from ``before_enqueue`` as a ``MiddlewareError``, so the broker
    refuses that enqueue rather than sending the message without its actor.
    """


class JobFailed(TriggersError):
    """A trigger job failed for good: its last attempt raised.

    The original exception is its ``__cause__``.  The worker actors list
    this class in Dramatiq's ``throws`` option, so the message is failed
    without another retry.
    """
