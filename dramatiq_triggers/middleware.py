"""``TriggersMiddleware``: the Dramatiq middleware that carries the acting
user in messages, sets the trigger interaction around each message, keeps
in-flight marks, manages database connections and runs the cron."""

from __future__ import annotations

import logging
import threading
import warnings
from typing import TYPE_CHECKING, Any

import dramatiq
import peewee as pw
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware

from .backends import Backend, RedisBackend, StubBackend
from .context import (
    UNSET,
    Job,
    _current_actor,
    _current_job,
    _in_trigger,
    _restored_actor,
    actor_for_enqueue,
)
from .declarations import ScheduledAction, Trigger, declaration_for_actor
from .enqueue import ACTOR_OPTION, RUN_ITEM
from .errors import ActorLookupError, ActorStoreError, JobFailed
from .persister import ActorPersister, JSONPersister
from .records import mark_item, real_database

if TYPE_CHECKING:
    from .cron_runner import CronRunner

#: Default time to live of an in-flight mark: longer than any sane run of
#: retries, short enough that a lost message frees its record within a day.
DEFAULT_IN_FLIGHT_TTL = 24 * 60 * 60 * 1000
#: Default time to live of a scheduler's (or scheduled action's) mark: a
#: lost run must not hold back the trigger's cron for long.
DEFAULT_SCHEDULER_IN_FLIGHT_TTL = 60 * 60 * 1000


class TriggersMiddleware(Middleware):
    """Runs triggers: add it to the broker before declaring any.

    Parameters:
      backend: where in-flight marks and cron tick claims live.  By
        default a ``RedisBackend`` on a ``RedisBroker``'s own client, a
        ``StubBackend`` beside a ``StubBroker``; other brokers (RabbitMQ)
        need one given.
      actor_persister: stores and looks up the acting user (default: the
        actor itself is stored, so it must be JSON-serializable).
      run_cron: start the cron in each worker process at boot.
      timezone: the time zone crontab expressions are read in.
      debug_all_triggers: log every trigger's routine steps at INFO.
      in_flight_ttl: milliseconds a worker message's in-flight mark lives
        at most.
      scheduler_in_flight_ttl: the same for the one-run-at-a-time mark of a
        scheduler or scheduled action; a run lost with a broker holds back
        the cron of its trigger for this long at most.
      close_connections: close the model's database connection after each
        trigger message that opened it (a pooled database gets it back in
        its pool), so long-running workers neither leak connections nor
        reuse a broken one.
      cron_misfire_grace: seconds a late cron tick may still fire; a tick
        that every process missed by more is skipped, not replayed.
    """

    def __init__(
        self,
        *,
        backend: Backend | None = None,
        actor_persister: ActorPersister | None = None,
        run_cron: bool = True,
        timezone: str = "UTC",
        debug_all_triggers: bool = False,
        in_flight_ttl: int = DEFAULT_IN_FLIGHT_TTL,
        scheduler_in_flight_ttl: int = DEFAULT_SCHEDULER_IN_FLIGHT_TTL,
        close_connections: bool = True,
        cron_misfire_grace: int = 30,
    ) -> None:
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")
        self._backend = backend
        self.actor_persister: ActorPersister = actor_persister or JSONPersister()
        self.run_cron = run_cron
        self.timezone = timezone
        self.debug_all_triggers = debug_all_triggers
        self.in_flight_ttl = in_flight_ttl
        self.scheduler_in_flight_ttl = scheduler_in_flight_ttl
        self.close_connections = close_connections
        self.cron_misfire_grace = cron_misfire_grace
        self.broker: dramatiq.Broker | None = None
        self._cron: CronRunner | None = None
        self._opened = threading.local()

    # -- set-up ------------------------------------------------------------

    def bind(self, broker: dramatiq.Broker) -> None:
        """Remember the broker this middleware was added to (once)."""
        if self.broker is not None:
            return
        self.broker = broker
        if not any(isinstance(middleware, CurrentMessage) for middleware in broker.middleware):
            # SnoozeJob re-sends the message being processed.
            broker.add_middleware(CurrentMessage())

    @property
    def backend(self) -> Backend:
        """The coordination backend, chosen from the broker unless given."""
        if self._backend is None:
            broker = self.broker
            if isinstance(broker, RedisBroker):
                # Under the broker's namespace: two applications sharing a
                # Redis database keep their marks and cron ticks apart.
                self._backend = RedisBackend(client=broker.client,
                                             prefix=f"{broker.namespace}:triggers")
            elif isinstance(broker, StubBroker):
                self._backend = StubBackend()
            elif broker is None:
                raise RuntimeError(
                    "TriggersMiddleware does not know its broker yet: declare a trigger on "
                    "the broker first, or pass backend=."
                )
            else:
                raise RuntimeError(
                    f"TriggersMiddleware cannot pick a coordination backend for "
                    f"{type(broker).__name__}: pass backend=RedisBackend(url=...)."
                )
        return self._backend

    def has_backend(self) -> bool:
        """Whether a backend was given or can be chosen from the broker."""
        return self._backend is not None or isinstance(self.broker, (RedisBroker, StubBroker))

    def persister_for(self, declaration: Trigger | ScheduledAction | None) -> ActorPersister:
        """The persister of a declaration's messages: its own, else the middleware's."""
        if declaration is not None and declaration.actor_persister is not None:
            return declaration.actor_persister
        return self.actor_persister

    def declared(self, declaration: Trigger | ScheduledAction) -> None:
        """Called for each new declaration: a running cron picks it up."""
        if self._cron is not None:
            self._cron.add(declaration)

    # -- enqueueing --------------------------------------------------------

    def before_enqueue(self, broker: dramatiq.Broker, message: Any, delay: int | None) -> None:
        if ACTOR_OPTION in message.options:
            return
        actor = actor_for_enqueue()
        if actor is UNSET or actor is None:
            return
        persister = self.persister_for(declaration_for_actor(message.actor_name))
        try:
            message.options[ACTOR_OPTION] = persister.store(actor)
        except Exception as error:
            raise ActorStoreError(
                f"Storing the actor of message {message.message_id} ({message.actor_name}) "
                f"failed: {error}"
            ) from error

    # -- processing --------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        declaration = declaration_for_actor(message.actor_name)
        if self.close_connections and declaration is not None and declaration.model is not None:
            # Before the actor lookup, which may read the same database.
            self._connect(declaration, message)
        stored = message.options.get(ACTOR_OPTION)
        try:
            actor = self.persister_for(declaration).lookup(stored)
        except Exception as error:
            raise self._lookup_failed(declaration, message, stored, error) from error
        _restored_actor.set(actor)
        if actor is None and declaration is not None:
            actor = declaration.default_actor
        _current_actor.set(actor)
        if declaration is None:
            return

        job = Job(
            trigger=declaration,
            kind=_kind(declaration, message.actor_name),
            primary_key=message.args[0] if message.args else None,
            attempt=message.options.get("retries", 0) + 1,
            max_attempts=_max_attempts(declaration, message.actor_name),
            message_id=message.message_id,
        )
        _current_job.set(job)
        _in_trigger.set(True)
        message._dramatiq_triggers_job = job

    def _connect(self, declaration: Trigger | ScheduledAction, message: Any) -> None:
        """Open the trigger's database for this message, to close it after.

        A connection that is already open on this thread (one the
        application manages) is left as it is.
        """
        try:
            assert declaration.model is not None
            database = real_database(declaration.model)
            if database.is_closed():
                self._opened.database = database
                database.connect()
        except Exception:
            # The attempt fails on its first query and is retried like any
            # other failure; the worker must not crash here.
            self.logger.warning("Could not connect to the database of %r for message %s.",
                                declaration, message.message_id, exc_info=True)

    def _lookup_failed(self, declaration: Trigger | ScheduledAction | None, message: Any,
                       stored: Any, error: Exception) -> ActorLookupError:
        """The error that fails this attempt, retried after the trigger's backoff.

        Dramatiq's worker does not log a ``Retry``, so the failure is
        logged here.
        """
        from .worker import retry_delay

        delay = None
        last = False  # For other actors, Dramatiq's Retries decides.
        if declaration is not None:
            attempt = message.options.get("retries", 0) + 1
            last = attempt >= _max_attempts(declaration, message.actor_name)
            delay = None if last else retry_delay(declaration, attempt)
            job = message._dramatiq_triggers_job = Job(
                declaration, _kind(declaration, message.actor_name), None, attempt,
                _max_attempts(declaration, message.actor_name), message.message_id,
            )
            job.delay = delay
        self.logger.log(logging.ERROR if last else logging.WARNING,
                        "Looking up the actor %r of message %s failed.", stored,
                        message.message_id, exc_info=error)
        return ActorLookupError(
            f"Looking up the actor {stored!r} of message {message.message_id} failed: "
            f"{error!r}",
            delay=delay,
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        self._finish(message, exception, skipped=False)

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._finish(message, None, skipped=True)

    def _finish(self, message: Any, exception: BaseException | None, *, skipped: bool) -> None:
        job: Job | None = _current_job.get() or getattr(message, "_dramatiq_triggers_job", None)
        _current_actor.set(None)
        _restored_actor.set(None)
        _current_job.set(None)
        _in_trigger.set(False)
        database = getattr(self._opened, "database", None)
        if database is not None:
            self._opened.database = None
            _close(database)

        declaration = declaration_for_actor(message.actor_name)
        if declaration is None:
            return
        if job is None:
            # Another middleware failed the message before ours ran.
            job = message._dramatiq_triggers_job = Job(
                declaration, _kind(declaration, message.actor_name), None,
                message.options.get("retries", 0) + 1,
                _max_attempts(declaration, message.actor_name), message.message_id,
            )
        if exception is not None:
            ending = isinstance(exception, JobFailed) or job.last_attempt
            if job.outcome not in ("failed", "retry"):
                job.outcome = "failed" if ending else "retry"
        else:
            ending = skipped or job.outcome != "snoozed"
            if job.outcome is None:
                job.outcome = "cancelled" if skipped else "success"
        key, item, ttl = self._mark_of(declaration, message)
        try:
            if ending:
                self.backend.release(key, [item], [message.message_id])
            else:
                # The message waits for its retry or snooze: keep its mark
                # alive for at least as long.
                self.backend.touch(key, item, message.message_id, ttl=ttl + (job.delay or 0))
        except Exception:
            # The mark expires on its own; the worker must not crash here.
            self.logger.warning("Could not update the in-flight mark of message %r.",
                                message.message_id, exc_info=True)

    def _mark_of(self, declaration: Trigger | ScheduledAction,
                 message: Any) -> tuple[str, str, int]:
        """The backend key, item and time to live of a message's in-flight mark."""
        if isinstance(declaration, Trigger) and message.actor_name == declaration.worker_actor_name:
            item = mark_item(message.args[0], message.kwargs.get("arguments"))
            return declaration.worker_actor_name, item, self.in_flight_ttl
        return message.actor_name, RUN_ITEM, self.scheduler_in_flight_ttl

    # -- worker lifecycle ----------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.bind(broker)
        if self.run_cron:
            self.start_cron()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.stop_cron()

    def before_worker_thread_shutdown(self, broker: dramatiq.Broker, thread: Any) -> None:
        # Close this thread's connections to every trigger database.
        from .declarations import all_declarations

        databases = {id(db): db for db in (_database_of(d) for d in all_declarations())
                     if db is not None}
        for database in databases.values():
            _close(database)

    def start_cron(self) -> None:
        """Start the cron of every declared trigger and scheduled action."""
        from .cron_runner import CronRunner

        if self._cron is None:
            assert self.broker is not None
            self._cron = CronRunner(self)
            self._cron.start()

    def stop_cron(self) -> None:
        if self._cron is not None:
            self._cron.stop()
            self._cron = None


def _database_of(declaration: Trigger | ScheduledAction) -> pw.Database | None:
    if declaration.model is None:
        return None
    try:
        return real_database(declaration.model)
    except RuntimeError:
        return None


def _close(database: pw.Database) -> None:
    try:
        if database.in_transaction():
            warnings.warn(
                "A trigger action left a transaction open; it is rolled back and the "
                "connection closed.",
                RuntimeWarning,
                stacklevel=2,
            )
            database.rollback()
            while database.in_transaction():
                database.pop_transaction()
        database.close()
    except Exception:
        # A broken connection: drop it, the next message connects afresh.
        database.dispose() if hasattr(database, "dispose") else None


def _kind(declaration: Trigger | ScheduledAction, actor_name: str) -> str:
    if isinstance(declaration, ScheduledAction):
        return "scheduled_action"
    return "worker" if actor_name == declaration.worker_actor_name else "scheduler"


def _max_attempts(declaration: Trigger | ScheduledAction, actor_name: str) -> int:
    if isinstance(declaration, Trigger) and actor_name == declaration.scheduler_actor_name:
        return declaration.max_scheduler_attempts
    return declaration.max_attempts


def middleware_of(broker: dramatiq.Broker) -> TriggersMiddleware:
    """The ``TriggersMiddleware`` of ``broker``."""
    for middleware in broker.middleware:
        if isinstance(middleware, TriggersMiddleware):
            middleware.bind(broker)
            return middleware
    raise RuntimeError("The broker has no TriggersMiddleware; add it with "
                       "broker.add_middleware(TriggersMiddleware()).")
