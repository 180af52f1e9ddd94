"""The worker: runs a trigger's action on one locked record, and a scheduled
action's function, with the error handling both share.

Each attempt reads the record by primary key *and* ``where`` inside one
transaction, locked; a record that no longer matches ends the job as
cancelled.  Failures are retried by Dramatiq's ``Retries`` middleware
(raised as ``Retry`` so that the backoff and the logging are ours); the
last attempt runs ``on_error`` and then fails the message for good.  A lock
that cannot be taken in time is no failure of the action: the message is
sent again a second later without using up an attempt.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import peewee as pw
from dramatiq.common import compute_backoff
from dramatiq.middleware import TimeLimitExceeded
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF, DEFAULT_MIN_BACKOFF

from .context import Job, current_job
from .declarations import ScheduledAction, Trigger
from .errors import CancelJob, JobFailed, SnoozeJob, TriggerNoLongerApplies
from .records import decode_primary_key, done_item, read_locked, real_database, transaction

logger = logging.getLogger("dramatiq_triggers.worker")

#: What an attempt may fail with: errors, and Dramatiq's time limit.
_FAILURES = (Exception, TimeLimitExceeded)
_CANCELS = (TriggerNoLongerApplies, CancelJob)
#: What taking the lock fails with when another transaction holds it too
#: long (SQLite's busy timeout, MySQL's lock wait timeout) or the database
#: cannot be reached.
_LOCK_ERRORS = (pw.OperationalError, pw.InterfaceError)
#: Milliseconds before a message whose record could not be locked runs again.
LOCK_RETRY_DELAY = 1000


class _LockNotTaken(Exception):
    """The record's transaction or lock could not be had; nothing ran."""


def make_worker_function(holder: dict[str, Trigger]) -> Callable[..., None]:
    def run_trigger_worker(primary_key: Any, arguments: dict[str, Any] | None = None) -> None:
        process_record(holder["trigger"], primary_key, arguments or {})

    return run_trigger_worker


def make_scheduled_action_function(holder: dict[str, ScheduledAction]) -> Callable[[], None]:
    def run_scheduled_action() -> None:
        process_scheduled_action(holder["trigger"])

    return run_scheduled_action


def flow_level(declaration: Trigger | ScheduledAction) -> int:
    """The level of routine log lines: INFO when debugging is on for it."""
    from .middleware import middleware_of

    debugging = declaration.debug or middleware_of(declaration.broker).debug_all_triggers
    return logging.INFO if debugging else logging.DEBUG


def _job(declaration: Trigger | ScheduledAction) -> Job:
    job = current_job()
    if job is None or job.trigger is not declaration:
        # The actor was called directly, not through a broker with the
        # middleware (e.g. ``trigger.worker_actor(pk)`` in a shell).
        raise RuntimeError(
            f"{declaration!r} ran outside a message: enqueue it (run_trigger, schedule) and "
            "let a worker with TriggersMiddleware process it."
        )
    return job


def process_record(trigger: Trigger, encoded_key: Any, arguments: dict[str, Any]) -> None:
    """One attempt of a trigger's worker job on the record ``encoded_key``."""
    job = _job(trigger)
    level = flow_level(trigger)
    model = trigger.model

    if trigger.state != "active":
        logger.log(level, "Cancelling %r for %r: the trigger is %s.", trigger, encoded_key,
                   trigger.state)
        job.outcome = "cancelled"
        return

    from .middleware import middleware_of

    middleware = middleware_of(trigger.broker)
    if trigger.trigger_once and middleware.backend.is_done(
        trigger.worker_actor_name, done_item(encoded_key)
    ):
        logger.log(level, "Cancelling %r for %r: it already ran once.", trigger, encoded_key)
        job.outcome = "cancelled"
        return

    primary_key = decode_primary_key(model, encoded_key)
    kwargs = {**trigger.action_input, **arguments}
    logger.log(level, "Running %r on %s %r, attempt %d of %d.", trigger, model.__name__,
               encoded_key, job.attempt, job.max_attempts)
    committed = False

    def mark_committed() -> None:
        nonlocal committed
        committed = True

    try:
        try:
            with _locked_record(trigger, primary_key) as record:
                if record is None:
                    raise TriggerNoLongerApplies()
                # Runs first among the commit's callbacks: an error raised
                # after it (a send deferred to the commit) comes after the
                # action's writes are in.
                real_database(model).after_commit(mark_committed)
                if trigger.read_metadata is not None:
                    kwargs["metadata"] = trigger.read_metadata(record)
                trigger.action(record, **kwargs)
        except _CANCELS as signal:
            logger.log(level, "Cancelled %r on %s %r: %s", trigger, model.__name__, encoded_key,
                       _reason(signal))
            job.outcome = "cancelled"
            return
        except SnoozeJob as snooze:
            _snooze(trigger, job, snooze.seconds, level)
            return
        except _LockNotTaken:
            raise
        except _FAILURES as error:
            if committed:
                logger.error("%r committed on %s %r, then a step after the commit failed.",
                             trigger, model.__name__, encoded_key, exc_info=error)
            else:
                handle = functools.partial(_on_error, trigger, primary_key, error)
                attempt_failed(trigger, job, error, handle if trigger.on_error else None)
                return
    except _LockNotTaken as waiting:
        logger.warning("Could not lock %s %r for %r (%s); trying again in %d ms without "
                       "using up an attempt.", model.__name__, encoded_key, trigger,
                       waiting.__cause__, LOCK_RETRY_DELAY)
        _snooze(trigger, job, LOCK_RETRY_DELAY / 1000, level)
        return

    job.outcome = "success"
    if trigger.trigger_once:
        try:
            middleware.backend.mark_done(trigger.worker_actor_name, done_item(encoded_key))
        except Exception:
            # The action has committed: it must not run again for this.
            logger.exception("Could not record that %r ran once on %s %r.", trigger,
                             model.__name__, encoded_key)
    logger.log(level, "Finished %r on %s %r.", trigger, model.__name__, encoded_key)


@contextlib.contextmanager
def _locked_record(trigger: Trigger, primary_key: tuple[Any, ...]) -> Iterator[pw.Model | None]:
    """The record in a transaction, locked; None if it no longer matches.

    Failing to begin the transaction or to take the lock raises
    ``_LockNotTaken``; the body's own errors roll the transaction back and
    go on as they are.
    """
    model = trigger.model
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(transaction(real_database(model), lock=trigger.lock_for_update))
            record = read_locked(model, primary_key, trigger.where_expression(),
                                 lock=trigger.lock_for_update)
        except _LOCK_ERRORS as error:
            raise _LockNotTaken() from error
        yield record


def _reason(signal: BaseException) -> str:
    if isinstance(signal, CancelJob) and signal.reason:
        return signal.reason
    return "the record no longer matches the trigger."


def _on_error(trigger: Trigger, primary_key: tuple[Any, ...], error: BaseException) -> bool:
    """Run ``on_error`` on the re-locked record; False if it no longer matches."""
    if trigger.on_error is None:
        return True
    with _locked_record(trigger, primary_key) as record:
        if record is None:
            return False
        trigger.on_error(record, error)
    return True


def process_scheduled_action(action: ScheduledAction) -> None:
    """One attempt of a scheduled action."""
    job = _job(action)
    level = flow_level(action)
    if action.state != "active":
        logger.log(level, "Cancelling %r: it is %s.", action, action.state)
        job.outcome = "cancelled"
        return

    kwargs = dict(action.action_input)
    if action.accepts_last_attempt:
        kwargs["last_attempt"] = job.last_attempt
    logger.log(level, "Running %r, attempt %d of %d.", action, job.attempt, job.max_attempts)
    try:
        action.action(**kwargs)
    except _CANCELS as signal:
        logger.log(level, "Cancelled %r: %s", action, _reason(signal))
        job.outcome = "cancelled"
        return
    except SnoozeJob as snooze:
        _snooze(action, job, snooze.seconds, level)
        return
    except _FAILURES as error:
        attempt_failed(action, job, error, None)
        return
    job.outcome = "success"
    logger.log(level, "Finished %r.", action)


def _snooze(declaration: Trigger | ScheduledAction, job: Job, seconds: float,
            level: int) -> None:
    """Send the message again after ``seconds``; the attempt is not used up."""
    from dramatiq.middleware import CurrentMessage

    message = CurrentMessage.get_current_message()
    if message is None:
        raise RuntimeError("SnoozeJob needs Dramatiq's CurrentMessage middleware on the broker.")
    job.delay = int(seconds * 1000)
    declaration.broker.enqueue(message.copy(), delay=job.delay)
    job.outcome = "snoozed"
    logger.log(level, "Snoozed %r (message %s) for %s seconds.", declaration, job.message_id,
               seconds)


def attempt_failed(
    declaration: Any,
    job: Job,
    error: BaseException,
    handle: Callable[[], bool] | None,
) -> None:
    """Retry a failed attempt, or end the job on its last one.

    Raises ``dramatiq.Retry`` (with our backoff) before the last attempt;
    on the last one runs ``on_error`` through ``handle`` and raises
    ``JobFailed`` unless the error was handled and the trigger says the job
    succeeds then.
    """
    what = f"{declaration!r} (message {job.message_id}"
    if job.primary_key is not None:
        what += f", record {job.primary_key!r}"
    what += ")"

    if not job.last_attempt:
        if declaration.log_errors:
            logger.warning("Attempt %d of %d of %s failed; it will be retried.", job.attempt,
                           job.max_attempts, what, exc_info=error)
        job.outcome = "retry"
        job.delay = retry_delay(declaration, job.attempt)
        raise dramatiq.Retry(str(error), delay=job.delay) from error

    if declaration.log_errors or declaration.log_final_error:
        logger.error("Last attempt (%d of %d) of %s failed.", job.attempt, job.max_attempts,
                     what, exc_info=error)
    if handle is not None:
        try:
            handled = handle()
        except _LockNotTaken:
            raise
        except _FAILURES as handler_error:
            logger.exception("on_error of %s raised.", what)
            job.outcome = "failed"
            raise JobFailed(f"{what} failed, and so did its on_error: {handler_error!r}") \
                from handler_error
        if not handled:
            logger.log(flow_level(declaration), "Cancelled %s: the record no longer matches, "
                       "so on_error was not run.", what)
            job.outcome = "cancelled"
            return
        if not (isinstance(declaration, Trigger) and declaration.on_error_fails_job):
            job.outcome = "success"
            return
    job.outcome = "failed"
    raise JobFailed(f"{what} failed after {job.attempt} attempt(s): {error!r}") from error


def retry_delay(declaration: Any, attempt: int) -> int:
    """Milliseconds before the attempt after ``attempt`` (which just failed)."""
    backoff = declaration.backoff
    if backoff is None:
        # Dramatiq's own exponential backoff, worked out here so that the
        # in-flight mark can be kept for as long as the retry waits.
        _, delay = compute_backoff(attempt - 1, factor=DEFAULT_MIN_BACKOFF,
                                   max_backoff=DEFAULT_MAX_BACKOFF)
        return int(delay)
    if callable(backoff):
        return max(0, int(backoff(attempt)))
    return backoff
