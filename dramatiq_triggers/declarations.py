"""Declaring triggers and scheduled actions.

``@trigger(Model, ...)`` and ``@scheduled_action(...)`` check every option
when the declaring module is imported, raise ``TriggerDeclarationError``
with the model, the trigger and the fix when one is wrong, and declare the
Dramatiq actors that run the work.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import dramatiq
import peewee as pw

from . import cron as cron_module
from .errors import JobFailed, TriggerDeclarationError
from .persister import ActorPersister
from .records import primary_key_fields

if TYPE_CHECKING:
    from .middleware import TriggersMiddleware

STATES = ("active", "paused", "deleted")
STREAM_MODES = ("keyset", "offset", "full_read")
DEFAULT_STREAM_BATCH_SIZE = 1000
#: Default Dramatiq priorities, as in ash_oban (lower runs first): workers
#: before schedulers, so rows already found are worked off first.
DEFAULT_WORKER_PRIORITY = 2
DEFAULT_SCHEDULER_PRIORITY = 3
DEFAULT_PRIORITY = 3
_QUEUE_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

_registry_lock = threading.RLock()
_triggers: dict[type[pw.Model], dict[str, Trigger]] = {}
_scheduled_actions: dict[type[pw.Model] | None, dict[str, ScheduledAction]] = {}
_by_actor_name: dict[str, Trigger | ScheduledAction] = {}


def _fail(what: str, problem: str, fix: str) -> TriggerDeclarationError:
    return TriggerDeclarationError(f"{what}: {problem} {fix}")


def _describe(model: type[pw.Model] | None, name: str, kind: str = "trigger") -> str:
    owner = model.__name__ if model is not None else "no model"
    return f"{kind} {name!r} on {owner}"


@dataclasses.dataclass(frozen=True, eq=False)
class Trigger:
    """A declared trigger: its options, and the actors that run it.

    Every option of ``@trigger`` is an attribute of the same name.  The
    worker and scheduler actors are ``worker_actor`` and
    ``scheduler_actor``.
    """

    model: type[pw.Model]
    name: str
    action: Callable[..., Any]
    where: pw.Expression | Callable[[], pw.Expression] | None
    cron: str | None
    queue: str
    scheduler_queue: str
    max_attempts: int
    max_scheduler_attempts: int
    backoff: int | Callable[[int], int] | None
    timeout: int | None
    record_limit: int | None
    stream_batch_size: int
    sort: tuple[pw.Node, ...]
    stream_with: str
    lock_for_update: bool
    read_metadata: Callable[[pw.Model], Mapping[str, Any]] | None
    action_input: Mapping[str, Any]
    on_error: Callable[[pw.Model, BaseException], Any] | None
    on_error_fails_job: bool
    trigger_once: bool
    log_errors: bool
    log_final_error: bool
    debug: bool
    state: str
    worker_priority: int
    scheduler_priority: int
    actor_persister: ActorPersister | None
    default_actor: Any
    worker_actor_name: str
    scheduler_actor_name: str
    worker_actor: dramatiq.Actor = dataclasses.field(repr=False)
    scheduler_actor: dramatiq.Actor = dataclasses.field(repr=False)

    def where_expression(self) -> pw.Expression | None:
        """The ``where`` filter as it stands now (a callable is called)."""
        where = self.where
        if where is None or isinstance(where, pw.Node):
            return where
        expression = where()
        _check_where_result(self.model, self.name, expression)
        return expression

    def sort_orderings(self) -> list[tuple[pw.Field, bool]]:
        """``(field, descending)`` pairs the scheduler orders by, primary key last."""
        orderings = [_ordering_of(node) for node in self.sort]
        seen = {field.name for field, _ in orderings}
        for field in primary_key_fields(self.model):
            if field.name not in seen:
                orderings.append((field, False))
        return orderings

    def has_cron(self) -> bool:
        return self.cron is not None

    @property
    def broker(self) -> dramatiq.Broker:
        """The broker the trigger's actors are declared on."""
        return self.worker_actor.broker

    def __repr__(self) -> str:
        return f"Trigger({self.model.__name__}, {self.name!r})"


@dataclasses.dataclass(frozen=True, eq=False)
class ScheduledAction:
    """A declared scheduled action: a function the cron runs, with no record."""

    model: type[pw.Model] | None
    name: str
    action: Callable[..., Any]
    cron: str
    action_input: Mapping[str, Any]
    queue: str
    max_attempts: int
    backoff: int | Callable[[int], int] | None
    timeout: int | None
    priority: int
    state: str
    debug: bool
    log_errors: bool
    log_final_error: bool
    actor_persister: ActorPersister | None
    default_actor: Any
    actor_name: str
    accepts_last_attempt: bool
    actor: dramatiq.Actor = dataclasses.field(repr=False)

    def has_cron(self) -> bool:
        return True

    @property
    def broker(self) -> dramatiq.Broker:
        """The broker the action's actor is declared on."""
        return self.actor.broker

    def __repr__(self) -> str:
        owner = self.model.__name__ if self.model is not None else "None"
        return f"ScheduledAction({owner}, {self.name!r})"


def _ordering_of(node: Any) -> tuple[Any, bool]:
    if isinstance(node, pw.Ordering):
        return node.node, node.direction.upper() == "DESC"
    return node, False


def _check_where_result(model: type[pw.Model], name: str, expression: Any) -> None:
    what = _describe(model, name)
    if not isinstance(expression, pw.Node) or isinstance(expression, pw.BaseQuery):
        raise _fail(
            what,
            f"where must be a peewee expression such as {model.__name__}.state == 'paid', "
            f"not {type(expression).__name__}.",
            "Pass an expression, or a function of no arguments that returns one.",
        )
    for field in _fields_in(expression):
        if field.model is not model:
            raise _fail(
                what,
                f"where uses {field.model.__name__}.{field.name}, which is not a field of "
                f"{model.__name__}.",
                "A trigger's filter may only use its own model's fields; reach other "
                "tables through a subquery (Model.field.in_(Other.select(...))).",
            )


def _fields_in(node: Any, seen: set[int] | None = None) -> Iterable[pw.Field]:
    """The model fields an expression refers to, subqueries left out."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, pw.Field):
        yield node
        return
    if isinstance(node, pw.BaseQuery):
        return
    if isinstance(node, (list, tuple)):
        children: Iterable[Any] = node
    elif isinstance(node, pw.Node):
        children = vars(node).values()
    else:
        return
    for child in children:
        if isinstance(child, (pw.Node, list, tuple)):
            yield from _fields_in(child, seen)


def _middleware(broker: dramatiq.Broker, what: str) -> TriggersMiddleware:
    from .middleware import TriggersMiddleware

    for middleware in broker.middleware:
        if isinstance(middleware, TriggersMiddleware):
            middleware.bind(broker)
            if not middleware.has_backend():
                raise _fail(
                    what,
                    f"TriggersMiddleware on a {type(broker).__name__} needs a coordination "
                    "backend for its in-flight marks and cron ticks.",
                    "Pass TriggersMiddleware(backend=RedisBackend(url=...)).",
                )
            return middleware
    raise _fail(
        what,
        f"the current Dramatiq broker ({type(broker).__name__}) has no TriggersMiddleware.",
        "Call broker.add_middleware(TriggersMiddleware()) and dramatiq.set_broker(broker) "
        "before the module that declares triggers is imported.",
    )


def _check_positive(what: str, option: str, value: Any, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(what, f"{option} must be a whole number of 1 or more, not {value!r}.",
                    f"Set {option} to a positive integer" + (" or None." if allow_none else "."))


def _check_backoff(what: str, backoff: Any) -> None:
    if backoff is None:
        return
    if callable(backoff):
        _check_binds(what, "backoff", backoff, (1,), {}, "backoff(attempt) -> milliseconds")
        return
    if isinstance(backoff, bool) or not isinstance(backoff, int) or backoff < 0:
        raise _fail(what, f"backoff must be milliseconds (an int >= 0) or a callable, "
                    f"not {backoff!r}.", "Pass e.g. backoff=5000 or backoff=lambda attempt: ...")


def _check_binds(
    what: str,
    option: str,
    function: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    shape: str,
    fix: str | None = None,
) -> None:
    if not callable(function):
        raise _fail(what, f"{option} must be callable, not {type(function).__name__}.",
                    f"Pass a function of the shape {shape}.")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # Builtins without a signature: trust them.
    try:
        signature.bind(*args, **kwargs)
    except TypeError as error:
        raise _fail(what, f"{option} {_qualname(function)}{signature} cannot be called as "
                    f"{shape} ({error}).",
                    fix or f"Change its signature to accept {shape}.") from None


def _qualname(function: Any) -> str:
    return getattr(function, "__qualname__", repr(function))


def _check_state(what: str, state: Any) -> None:
    if state not in STATES:
        raise _fail(what, f"state must be one of {', '.join(map(repr, STATES))}, not {state!r}.",
                    "Use 'paused' to stop a trigger for a while and 'deleted' to drain its "
                    "queued messages before removing it.")


def _check_cron(what: str, cron: Any) -> None:
    if not isinstance(cron, str):
        raise _fail(what, f"cron must be a crontab string or None, not {cron!r}.",
                    "Write e.g. cron='*/5 * * * *'.")
    try:
        cron_module.parse_cron(cron)
    except cron_module.CronError as error:
        raise _fail(what, str(error), "Fix the crontab expression.") from None


def _check_queue(what: str, option: str, queue: Any) -> None:
    if not isinstance(queue, str) or not _QUEUE_NAME.fullmatch(queue):
        raise _fail(what, f"{option} {queue!r} is not a valid Dramatiq queue name.",
                    "Queue names start with a letter or underscore, followed by letters, "
                    "digits, dots, dashes or underscores.")


def _check_action_input(what: str, action_input: Any) -> dict[str, Any]:
    if action_input is None:
        return {}
    if not isinstance(action_input, Mapping) or not all(
        isinstance(key, str) for key in action_input
    ):
        raise _fail(what, f"action_input must be a dict of keyword arguments, not "
                    f"{action_input!r}.", "Pass action_input={'name': value}.")
    return dict(action_input)


def _check_persister(what: str, persister: Any) -> None:
    if persister is not None and not isinstance(persister, ActorPersister):
        raise _fail(what, "actor_persister must have store(actor) and lookup(value) methods.",
                    "Pass an ActorPersister, or None to use the middleware's.")


def _check_actor_name(
    what: str, option: str, actor_name: Any, owner: object, broker: dramatiq.Broker
) -> None:
    if not isinstance(actor_name, str) or not actor_name:
        raise _fail(what, f"{option} must be a non-empty string.", "Pick a stable name.")
    taken = _by_actor_name.get(actor_name)
    if taken is not None and taken is not owner:
        raise _fail(what, f"{option} {actor_name!r} is already used by {taken!r}.",
                    f"Give this trigger its own {option}.")
    if taken is None and actor_name in broker.actors:
        # Dramatiq would refuse the name too, but without saying which
        # trigger asked for it.
        raise _fail(what, f"{option} {actor_name!r} is already the name of a Dramatiq actor "
                    "on this broker.", f"Give this trigger its own {option}.")


def _check_sort(what: str, model: type[pw.Model], sort: Any, stream_with: str) -> tuple[Any, ...]:
    if sort is None:
        return ()
    nodes = tuple(sort) if isinstance(sort, (list, tuple)) else (sort,)
    for node in nodes:
        field, _ = _ordering_of(node)
        if not isinstance(field, pw.Field) or field.model is not model:
            raise _fail(what, f"sort may only list fields of {model.__name__} (optionally "
                        f".desc()), not {node!r}.", f"Write sort=[{model.__name__}.created_at].")
        if field.null and stream_with == "keyset":
            raise _fail(what, f"sort field {field.name!r} is nullable, and keyset streaming "
                        "cannot page past NULL values.",
                        "Make the column NOT NULL, sort by another field, or set "
                        "stream_with='offset'.")
    return nodes


def trigger(
    model: type[pw.Model],
    *,
    where: pw.Expression | Callable[[], pw.Expression] | None = None,
    cron: str | None = "* * * * *",
    name: str | None = None,
    queue: str | None = None,
    scheduler_queue: str | None = None,
    max_attempts: int = 1,
    max_scheduler_attempts: int = 1,
    backoff: int | Callable[[int], int] | None = None,
    timeout: int | None = None,
    record_limit: int | None = None,
    stream_batch_size: int = DEFAULT_STREAM_BATCH_SIZE,
    sort: Any = None,
    stream_with: str = "keyset",
    lock_for_update: bool = True,
    read_metadata: Callable[[Any], Mapping[str, Any]] | None = None,
    action_input: Mapping[str, Any] | None = None,
    on_error: Callable[[Any, BaseException], Any] | None = None,
    on_error_fails_job: bool = False,
    trigger_once: bool = False,
    log_errors: bool = True,
    log_final_error: bool = True,
    debug: bool = False,
    state: str = "active",
    worker_priority: int = DEFAULT_WORKER_PRIORITY,
    scheduler_priority: int = DEFAULT_SCHEDULER_PRIORITY,
    actor_persister: ActorPersister | None = None,
    default_actor: Any = None,
    worker_actor_name: str | None = None,
    scheduler_actor_name: str | None = None,
) -> Callable[[Callable[..., Any]], Trigger]:
    """Declare a trigger on ``model`` whose action is the decorated function.

    The action is called as ``action(record, **action_input,
    **action_arguments)`` (plus ``metadata=`` when ``read_metadata`` is
    set) inside the worker's transaction, on the locked record.  See the
    README for every option.

    Raises:
      TriggerDeclarationError: when an option is wrong; at import time.
    """
    model_name = getattr(model, "__name__", repr(model))
    if not (isinstance(model, type) and issubclass(model, pw.Model)):
        raise TriggerDeclarationError(
            f"trigger on {model_name}: @trigger needs a peewee Model class as its first "
            "argument. Write @trigger(Order, where=...)."
        )

    def decorate(action: Callable[..., Any]) -> Trigger:
        trigger_name = name if name is not None else getattr(action, "__name__", None)
        what = _describe(model, str(trigger_name))
        if not isinstance(trigger_name, str) or not _NAME.fullmatch(trigger_name):
            raise _fail(what, "the name must be a Python identifier.", "Pass name='...'.")
        if not model._meta.primary_key:
            raise _fail(what, f"{model_name} has no primary key, so a worker cannot find "
                        "its row again.", "Give the model a primary key (or a CompositeKey).")

        broker = dramatiq.get_broker()
        middleware = _middleware(broker, what)
        table = model._meta.table_name
        worker_queue = queue if queue is not None else f"{table}_{trigger_name}"
        sched_queue = scheduler_queue if scheduler_queue is not None else worker_queue
        _check_queue(what, "queue", worker_queue)
        _check_queue(what, "scheduler_queue", sched_queue)
        for option, value in (("max_attempts", max_attempts),
                              ("max_scheduler_attempts", max_scheduler_attempts),
                              ("stream_batch_size", stream_batch_size)):
            _check_positive(what, option, value, allow_none=False)
        _check_positive(what, "record_limit", record_limit, allow_none=True)
        _check_positive(what, "timeout", timeout, allow_none=True)
        _check_backoff(what, backoff)
        _check_state(what, state)
        if cron is not None:
            _check_cron(what, cron)
        if stream_with not in STREAM_MODES:
            raise _fail(what, f"stream_with must be one of {', '.join(map(repr, STREAM_MODES))}, "
                        f"not {stream_with!r}.", "Leave it at 'keyset' unless the sort needs "
                        "'offset' or the filter must be read at one instant ('full_read').")
        sort_nodes = _check_sort(what, model, sort, stream_with)
        if where is not None:
            if callable(where) and not isinstance(where, pw.Node):
                _check_binds(what, "where", where, (), {}, "where() -> expression")
                try:
                    expression = where()
                except Exception as error:
                    raise _fail(what, f"calling where() raised {error!r}.",
                                "Fix the callable: it is called once at declaration to check "
                                "the expression it builds, so it must work at import time "
                                "and have no side effects.") from error
                _check_where_result(model, trigger_name, expression)
            else:
                _check_where_result(model, trigger_name, where)
        inputs = _check_action_input(what, action_input)
        call_kwargs = dict(inputs)
        if read_metadata is not None:
            _check_binds(what, "read_metadata", read_metadata, (None,), {},
                         "read_metadata(record) -> dict")
            call_kwargs["metadata"] = {}
        shape = "action(record" + "".join(f", {key}=..." for key in call_kwargs) + ")"
        _check_binds(what, "the action", action, (None,), call_kwargs, shape,
                     f"Change its signature to accept {shape}, or give every other parameter "
                     "a default or a value in action_input (the action_arguments of "
                     "run_trigger can only add to these).")
        if on_error is not None:
            _check_binds(what, "on_error", on_error, (None, None), {}, "on_error(record, error)")
        _check_persister(what, actor_persister)
        for option, value in (("worker_priority", worker_priority),
                              ("scheduler_priority", scheduler_priority)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(what, f"{option} must be an int, not {value!r}.",
                            "Lower numbers run first, as with Dramatiq's priority.")

        worker_name = (
            worker_actor_name if worker_actor_name is not None
            else f"dramatiq_triggers.{table}.{trigger_name}.worker"
        )
        scheduler_name = (
            scheduler_actor_name if scheduler_actor_name is not None
            else f"dramatiq_triggers.{table}.{trigger_name}.scheduler"
        )
        if worker_name == scheduler_name:
            raise _fail(what, "worker_actor_name and scheduler_actor_name are the same.",
                        "Give them different names.")

        with _registry_lock:
            _forget_if_on_another_broker(_triggers.get(model, {}).get(trigger_name), broker)
            if trigger_name in _triggers.get(model, {}):
                raise _fail(what, f"{model_name} already has a trigger named {trigger_name!r}.",
                            "Trigger names must be unique per model; pass name='...'.")
            _check_actor_name(what, "worker_actor_name", worker_name, None, broker)
            _check_actor_name(what, "scheduler_actor_name", scheduler_name, None, broker)

            from . import scheduler as scheduler_module
            from . import worker as worker_module

            holder: dict[str, Trigger] = {}
            worker_actor = _declare_actor(
                worker_module.make_worker_function(holder), broker, worker_name, worker_queue,
                worker_priority, max_attempts, timeout,
            )
            scheduler_actor = _declare_actor(
                scheduler_module.make_scheduler_function(holder), broker, scheduler_name,
                sched_queue, scheduler_priority, max_scheduler_attempts, None,
            )
            declared = Trigger(
                model=model,
                name=trigger_name,
                action=action,
                where=where,
                cron=cron,
                queue=worker_queue,
                scheduler_queue=sched_queue,
                max_attempts=max_attempts,
                max_scheduler_attempts=max_scheduler_attempts,
                backoff=backoff,
                timeout=timeout,
                record_limit=record_limit,
                stream_batch_size=stream_batch_size,
                sort=sort_nodes,
                stream_with=stream_with,
                lock_for_update=lock_for_update,
                read_metadata=read_metadata,
                action_input=inputs,
                on_error=on_error,
                on_error_fails_job=on_error_fails_job,
                trigger_once=trigger_once,
                log_errors=log_errors,
                log_final_error=log_final_error,
                debug=debug,
                state=state,
                worker_priority=worker_priority,
                scheduler_priority=scheduler_priority,
                actor_persister=actor_persister,
                default_actor=default_actor,
                worker_actor_name=worker_name,
                scheduler_actor_name=scheduler_name,
                worker_actor=worker_actor,
                scheduler_actor=scheduler_actor,
            )
            holder["trigger"] = declared
            _triggers.setdefault(model, {})[trigger_name] = declared
            _by_actor_name[worker_name] = declared
            _by_actor_name[scheduler_name] = declared
        middleware.declared(declared)
        return declared

    return decorate


def scheduled_action(
    model: type[pw.Model] | None = None,
    *,
    cron: str,
    name: str | None = None,
    action_input: Mapping[str, Any] | None = None,
    queue: str | None = None,
    max_attempts: int = 1,
    backoff: int | Callable[[int], int] | None = None,
    timeout: int | None = None,
    priority: int = DEFAULT_PRIORITY,
    state: str = "active",
    debug: bool = False,
    log_errors: bool = True,
    log_final_error: bool = True,
    actor_persister: ActorPersister | None = None,
    default_actor: Any = None,
    actor_name: str | None = None,
) -> Callable[[Callable[..., Any]], ScheduledAction]:
    """Declare a function the cron runs, with no record.

    It is called as ``function(**action_input)``, plus
    ``last_attempt=True/False`` when its signature accepts that keyword.
    ``model``, when given, only groups the action for ``info``.

    Raises:
      TriggerDeclarationError: when an option is wrong; at import time.
    """
    if model is not None and not (isinstance(model, type) and issubclass(model, pw.Model)):
        raise TriggerDeclarationError(
            f"scheduled action on {model!r}: model must be a peewee Model class or None. "
            "Write @scheduled_action(cron=...) or @scheduled_action(Order, cron=...)."
        )

    def decorate(function: Callable[..., Any]) -> ScheduledAction:
        action_name = name if name is not None else getattr(function, "__name__", None)
        what = _describe(model, str(action_name), "scheduled action")
        if not isinstance(action_name, str) or not _NAME.fullmatch(action_name):
            raise _fail(what, "the name must be a Python identifier.", "Pass name='...'.")
        broker = dramatiq.get_broker()
        middleware = _middleware(broker, what)
        prefix = model._meta.table_name if model is not None else "scheduled"
        action_queue = queue if queue is not None else f"{prefix}_{action_name}"
        _check_queue(what, "queue", action_queue)
        _check_cron(what, cron)
        _check_positive(what, "max_attempts", max_attempts, allow_none=False)
        _check_positive(what, "timeout", timeout, allow_none=True)
        _check_backoff(what, backoff)
        _check_state(what, state)
        _check_persister(what, actor_persister)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise _fail(what, f"priority must be an int, not {priority!r}.",
                        "Lower numbers run first, as with Dramatiq's priority.")
        inputs = _check_action_input(what, action_input)
        accepts_last_attempt = _accepts_keyword(function, "last_attempt")
        kwargs = dict(inputs)
        if accepts_last_attempt:
            kwargs["last_attempt"] = False
        _check_binds(what, "the function", function, (), kwargs,
                     "function(" + ", ".join(f"{key}=..." for key in kwargs) + ")")
        full_name = (
            actor_name if actor_name is not None
            else f"dramatiq_triggers.{prefix}.{action_name}.scheduled_action"
        )

        with _registry_lock:
            _forget_if_on_another_broker(_scheduled_actions.get(model, {}).get(action_name),
                                         broker)
            if action_name in _scheduled_actions.get(model, {}):
                raise _fail(what, "a scheduled action of that name is already declared there.",
                            "Names must be unique per model; pass name='...'.")
            _check_actor_name(what, "actor_name", full_name, None, broker)

            from . import worker as worker_module

            holder: dict[str, ScheduledAction] = {}
            actor = _declare_actor(
                worker_module.make_scheduled_action_function(holder), broker, full_name,
                action_queue, priority, max_attempts, timeout,
            )
            declared = ScheduledAction(
                model=model,
                name=action_name,
                action=function,
                cron=cron,
                action_input=inputs,
                queue=action_queue,
                max_attempts=max_attempts,
                backoff=backoff,
                timeout=timeout,
                priority=priority,
                state=state,
                debug=debug,
                log_errors=log_errors,
                log_final_error=log_final_error,
                actor_persister=actor_persister,
                default_actor=default_actor,
                actor_name=full_name,
                accepts_last_attempt=accepts_last_attempt,
                actor=actor,
            )
            holder["trigger"] = declared
            _scheduled_actions.setdefault(model, {})[action_name] = declared
            _by_actor_name[full_name] = declared
        middleware.declared(declared)
        return declared

    return decorate


def _declare_actor(
    function: Callable[..., None],
    broker: dramatiq.Broker,
    actor_name: str,
    queue_name: str,
    priority: int,
    max_attempts: int,
    timeout: int | None,
) -> dramatiq.Actor:
    """The Dramatiq actor that runs one kind of trigger job.

    ``JobFailed`` is in ``throws``: a job's last attempt raises it, and the
    message then fails without another retry.
    """
    options: dict[str, Any] = {"max_retries": max_attempts - 1, "throws": (JobFailed,)}
    if timeout is not None:
        options["time_limit"] = timeout
    return dramatiq.actor(actor_name=actor_name, queue_name=queue_name, priority=priority,
                          broker=broker, **options)(function)


def _accepts_keyword(function: Callable[..., Any], keyword: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        parameter.kind is inspect.Parameter.VAR_KEYWORD
        or (parameter.name == keyword and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY)
        for parameter in parameters
    )


def _forget_if_on_another_broker(
    declared: Trigger | ScheduledAction | None, broker: dramatiq.Broker
) -> None:
    """Drop a declaration of the same name made on a broker no longer current.

    A name is unique per model on one broker.  Declaring it again on a new
    broker (a test fixture that makes a ``StubBroker`` per test, say)
    replaces the old declaration instead of failing.
    """
    if declared is None:
        return
    if declared.broker is broker:
        return
    if isinstance(declared, Trigger):
        del _triggers[declared.model][declared.name]
        names = [declared.worker_actor_name, declared.scheduler_actor_name]
    else:
        del _scheduled_actions[declared.model][declared.name]
        names = [declared.actor_name]
    for name in names:
        if _by_actor_name.get(name) is declared:
            del _by_actor_name[name]


def declaration_for_actor(actor_name: str) -> Trigger | ScheduledAction | None:
    """The trigger or scheduled action that owns a Dramatiq actor, if any."""
    return _by_actor_name.get(actor_name)


def resolve_trigger(model: type[pw.Model], trigger: Trigger | str) -> Trigger:
    """A ``Trigger`` given itself or its name on ``model``."""
    if isinstance(trigger, Trigger):
        if trigger.model is not model and not issubclass(model, trigger.model):
            raise ValueError(f"{trigger!r} is not a trigger of {model.__name__}.")
        return trigger
    found = _triggers.get(model, {}).get(trigger)
    if found is None:
        names = ", ".join(sorted(_triggers.get(model, {}))) or "none"
        raise LookupError(
            f"{model.__name__} has no trigger named {trigger!r} (its triggers: {names})."
        )
    return found


def triggers_of(model: type[pw.Model]) -> list[Trigger]:
    return list(_triggers.get(model, {}).values())


def scheduled_actions_of(model: type[pw.Model] | None) -> list[ScheduledAction]:
    return list(_scheduled_actions.get(model, {}).values())


def all_declarations() -> list[Trigger | ScheduledAction]:
    with _registry_lock:
        declared: list[Trigger | ScheduledAction] = []
        for by_name in _triggers.values():
            declared.extend(by_name.values())
        for actions in _scheduled_actions.values():
            declared.extend(actions.values())
        return declared


def forget_all() -> None:
    """Forget every declaration (for test suites that declare per test)."""
    with _registry_lock:
        _triggers.clear()
        _scheduled_actions.clear()
        _by_actor_name.clear()
