"""Enqueueing trigger work: worker messages for records, scheduler messages,
in-flight marks, sending after commit, and the broker round trips of a page.
"""

from __future__ import annotations

import inspect
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import dramatiq
import peewee as pw
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.encoder import JSONEncoder
from dramatiq.message import get_encoder
from dramatiq.middleware import Middleware, MiddlewareError

from .context import UNSET, actor_for_enqueue
from .declarations import ScheduledAction, Trigger, resolve_trigger
from .records import done_item, encode_primary_key, mark_item, real_database

#: The message option that carries the stored actor.
ACTOR_OPTION = "dramatiq_triggers_actor"
#: The message option that carries the delay ``build_trigger`` was given.
DELAY_OPTION = "dramatiq_triggers_delay"
#: The in-flight item of a scheduler or scheduled action: one run at a time.
RUN_ITEM = "run"


def _middleware(broker: dramatiq.Broker) -> Any:
    from .middleware import middleware_of

    return middleware_of(broker)


def store_actor(declaration: Trigger | ScheduledAction, actor: Any) -> dict[str, Any]:
    """The message options that carry ``actor`` (none when there is no actor)."""
    if actor is UNSET or actor is None:
        return {}
    persister = _middleware(declaration.broker).persister_for(declaration)
    return {ACTOR_OPTION: persister.store(actor)}


def _check_arguments(trigger: Trigger, arguments: dict[str, Any]) -> None:
    if not isinstance(arguments, dict):
        raise TypeError(f"action_arguments of {trigger!r} must be a dict, not "
                        f"{type(arguments).__name__}.")
    try:
        json.dumps(arguments)
    except (TypeError, ValueError) as error:
        raise TypeError(f"action_arguments of {trigger!r} must be JSON-serializable: "
                        f"{error}.") from None
    kwargs = {**trigger.action_input, **arguments}
    if trigger.read_metadata is not None:
        kwargs["metadata"] = {}
    try:
        inspect.signature(trigger.action).bind(None, **kwargs)
    except TypeError as error:
        raise TypeError(f"The action of {trigger!r} cannot take the arguments "
                        f"{sorted(arguments)}: {error}.") from None
    except ValueError:
        pass


def build_trigger(
    record: pw.Model,
    trigger: Trigger | str,
    *,
    actor: Any = UNSET,
    action_arguments: dict[str, Any] | None = None,
    delay: int | None = None,
) -> Message[Any]:
    """Build the worker message of ``trigger`` for ``record`` without sending it.

    ``actor`` defaults to the one of ``acting_as`` (or of the message being
    processed).  ``delay`` (milliseconds) is kept in the message and applied
    by ``run_trigger``-style sending.
    """
    declared = resolve_trigger(type(record), trigger)
    arguments, options = _message_parts(declared, actor, action_arguments, delay)
    return worker_message(declared, encode_primary_key(declared.model, record), arguments,
                           options)


def _message_parts(
    trigger: Trigger, actor: Any, action_arguments: dict[str, Any] | None, delay: int | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked arguments and the options shared by a call's worker messages."""
    arguments = {} if action_arguments is None else action_arguments
    _check_arguments(trigger, arguments)
    options = store_actor(trigger, actor_for_enqueue() if actor is UNSET else actor)
    if delay is not None:
        options[DELAY_OPTION] = int(delay)
    return dict(arguments), options


def worker_message(
    trigger: Trigger,
    primary_key: Any,
    arguments: dict[str, Any],
    options: dict[str, Any],
    *,
    message_id: str | None = None,
) -> Message[Any]:
    return Message(
        queue_name=trigger.queue,
        actor_name=trigger.worker_actor_name,
        args=(primary_key,),
        kwargs={"arguments": arguments} if arguments else {},
        options=dict(options),
        message_id=message_id or str(uuid.uuid4()),
    )


def message_ids(count: int) -> list[str]:
    """``count`` fresh message ids: random version 4 UUIDs, as Dramatiq makes.

    One ``os.urandom`` call for a whole page costs a quarter of calling
    ``uuid.uuid4()`` for each message.
    """
    digits = os.urandom(16 * count).hex()
    return [
        f"{digits[i:i + 8]}-{digits[i + 8:i + 12]}-4{digits[i + 13:i + 16]}-"
        f"{'89ab'[int(digits[i + 16], 16) & 3]}{digits[i + 17:i + 20]}-{digits[i + 20:i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def run_trigger(
    record: pw.Model,
    trigger: Trigger | str,
    *,
    actor: Any = UNSET,
    action_arguments: dict[str, Any] | None = None,
    delay: int | None = None,
) -> Message[Any] | None:
    """Enqueue ``trigger``'s worker message for ``record``.

    Inside an open transaction of the model's database, the message is sent
    when that transaction commits, and never if it rolls back.  A record
    that already has a message in flight for the same arguments is not
    enqueued again.

    .. warning:: peewee does not track savepoints, so rolling back a nested
       ``atomic()`` block does not withdraw a message enqueued inside it:
       it is sent when the outer transaction commits, and the worker, which
       reads the row again with ``where``, cancels it if the row is gone or
       no longer matches.

    Returns:
      the message; None when it was skipped because one is in flight (or,
      with ``trigger_once``, the record was already processed).  A message
      deferred to the commit is returned as built.
    """
    message = build_trigger(record, trigger, actor=actor, action_arguments=action_arguments,
                            delay=delay)
    declared = resolve_trigger(type(record), trigger)
    sent = send_after_commit(declared, [message])
    return message if sent is None or sent else None


def run_triggers(
    records: Iterable[pw.Model],
    trigger: Trigger | str,
    *,
    actor: Any = UNSET,
    action_arguments: dict[str, Any] | None = None,
    delay: int | None = None,
) -> list[Message[Any]]:
    """Enqueue ``trigger``'s worker messages for many records, in bulk.

    The in-flight check takes one backend round trip and the messages reach
    the broker in one pipeline (on Redis) per ``stream_batch_size``
    records.  The records must all be of the trigger's model.

    Returns:
      the messages sent (those built, when deferred to a commit).
    """
    records = list(records)
    if not records:
        return []
    declared = resolve_trigger(type(records[0]), trigger)
    # The arguments are checked and the actor stored once for the whole call.
    arguments, options = _message_parts(declared, actor, action_arguments, delay)
    messages = []
    for record in records:
        resolve_trigger(type(record), declared)
        messages.append(worker_message(declared, encode_primary_key(declared.model, record),
                                        arguments, options))
    sent = send_after_commit(declared, messages)
    return messages if sent is None else sent


def send_after_commit(trigger: Trigger, messages: list[Message[Any]]) -> list[Message[Any]] | None:
    """Send now, or when the open transaction of the model's database commits.

    Returns the messages sent, or None when sending waits for a commit.
    """
    database = real_database(trigger.model)
    if database.in_transaction():
        database.after_commit(lambda: send_worker_messages(trigger, messages))
        return None
    return send_worker_messages(trigger, messages)


def send_worker_messages(trigger: Trigger, messages: Sequence[Message[Any]]) -> list[Message[Any]]:
    """Take the in-flight marks of the messages, then send those that got one."""
    broker = trigger.broker
    middleware = _middleware(broker)
    sent: list[Message[Any]] = []
    batch = trigger.stream_batch_size
    for start in range(0, len(messages), batch):
        page = messages[start:start + batch]
        keys = [message.args[0] for message in page]
        items = [mark_item(key, message.kwargs.get("arguments")) for key, message
                 in zip(keys, page)]
        done = [done_item(key) for key in keys] if trigger.trigger_once else None
        owners = [message.message_id for message in page]
        claimed = middleware.backend.claim(trigger.worker_actor_name, items,
                                           ttl=middleware.in_flight_ttl, done=done, owners=owners)
        chosen = [message for message, ok in zip(page, claimed) if ok]
        try:
            enqueue_messages(broker, chosen)
        except BaseException:
            taken = [(item, owner) for item, owner, ok in zip(items, owners, claimed) if ok]
            middleware.backend.release(trigger.worker_actor_name, [item for item, _ in taken],
                                       [owner for _, owner in taken])
            raise
        sent.extend(chosen)
    return sent


def enqueue_messages(broker: dramatiq.Broker, messages: Sequence[Message[Any]]) -> None:
    """Send messages in as few broker round trips as the broker allows.

    Every middleware still sees each message through ``before_enqueue`` and
    ``after_enqueue``.  On a ``RedisBroker`` a page goes out in one
    MULTI/EXEC; other brokers get one ``enqueue`` call per message.
    """
    if not messages:
        return
    if isinstance(broker, RedisBroker):
        _enqueue_redis(broker, messages)
        return
    for message in messages:
        delay = message.options.get(DELAY_OPTION)
        broker.enqueue(message, delay=delay)


def _hooks(broker: dramatiq.Broker, name: str) -> list[tuple[Middleware, Any]]:
    """The middleware that override hook ``name``, in the order the broker calls them."""
    middleware = broker.middleware if name.startswith("before_") else broker.middleware[::-1]
    default = getattr(Middleware, name)
    return [(item, getattr(item, name)) for item in middleware
            if getattr(type(item), name) is not default]


def _emit(broker: dramatiq.Broker, hooks: list[tuple[Middleware, Any]], name: str,
          message: Message[Any], delay: int | None) -> None:
    # As Broker.emit_before/emit_after: a MiddlewareError stops a before
    # hook's enqueue, any other error is logged and the message goes on.
    for middleware, hook in hooks:
        try:
            hook(broker, message, delay)
        except MiddlewareError:
            if name.startswith("before_"):
                raise
            broker.logger.critical("Unexpected failure in %s of %r.", name, middleware,
                                   exc_info=True)
        except Exception:
            broker.logger.critical("Unexpected failure in %s of %r.", name, middleware,
                                   exc_info=True)


_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def _encoder() -> Any:
    """Encode a message's fields as ``Message.encode`` would."""
    encoder = get_encoder()
    if type(encoder) is JSONEncoder:
        # Dramatiq's encoder builds a json encoder per message; one made
        # once gives the same bytes.
        return lambda data: _compact_json(data).encode("utf-8")
    return encoder.encode


def _enqueue_redis(broker: RedisBroker, messages: Sequence[Message[Any]]) -> None:
    """Queue a page of messages on a ``RedisBroker`` in one MULTI/EXEC.

    It writes what the broker's ``enqueue`` script writes for each message
    (the message in the queue's hash, its id at the end of the queue's
    list, the broker's heartbeat) with one HSET and one RPUSH per queue for
    the whole page, instead of one script call per message, which is most
    of the time of a page.  This follows the Redis layout of Dramatiq 2,
    which the package's dependency range pins.
    """
    before = _hooks(broker, "before_enqueue")
    after = _hooks(broker, "after_enqueue")
    encode = _encoder()
    queues: dict[str, tuple[list[str], dict[str, bytes]]] = {}
    sent = []
    for message in messages:
        delay = message.options.get(DELAY_OPTION)
        if delay is not None:
            message = message.copy(queue_name=dq_name(message.queue_name),
                                   options={"eta": current_millis() + delay})
        # A message is queued under its own id the first time; Dramatiq's
        # retries give each later enqueue a fresh one.
        message.options.setdefault("redis_message_id", message.message_id)
        _emit(broker, before, "before_enqueue", message, delay)
        redis_message_id = message.options["redis_message_id"]
        ids, payloads = queues.setdefault(message.queue_name, ([], {}))
        ids.append(redis_message_id)
        payloads[redis_message_id] = encode({
            "queue_name": message.queue_name,
            "actor_name": message.actor_name,
            "args": message.args,
            "kwargs": message.kwargs,
            "options": message.options,
            "message_id": message.message_id,
            "message_timestamp": message.message_timestamp,
        })
        sent.append((delay, message))

    namespace = broker.namespace
    pipeline = broker.client.pipeline(transaction=True)
    pipeline.zadd(f"{namespace}:__heartbeats__", {broker.broker_id: current_millis()})
    for queue_name, (ids, payloads) in queues.items():
        pipeline.hset(f"{namespace}:{queue_name}.msgs", mapping=payloads)
        pipeline.rpush(f"{namespace}:{queue_name}", *ids)
    pipeline.execute()

    for delay, message in sent:
        _emit(broker, after, "after_enqueue", message, delay)


def schedule(
    target: type[pw.Model] | Trigger | ScheduledAction,
    name: str | None = None,
    *,
    actor: Any = UNSET,
) -> Message[Any] | None:
    """Enqueue a trigger's scheduler, or a scheduled action, now.

    Called as ``schedule(Model, "name")`` or ``schedule(trigger_or_action)``.
    Only one run of each is in flight at a time: when one already is,
    nothing is sent and None is returned.
    """
    declaration = _resolve_schedulable(target, name)
    options = store_actor(declaration, actor_for_enqueue() if actor is UNSET else actor)
    if isinstance(declaration, Trigger):
        dramatiq_actor = declaration.scheduler_actor
        key = declaration.scheduler_actor_name
    else:
        dramatiq_actor = declaration.actor
        key = declaration.actor_name
    message = dramatiq_actor.message_with_options(**options)
    broker = dramatiq_actor.broker
    middleware = _middleware(broker)
    owners = [message.message_id]
    if not middleware.backend.claim(key, [RUN_ITEM], ttl=middleware.scheduler_in_flight_ttl,
                                    owners=owners)[0]:
        return None
    try:
        broker.enqueue(message)
    except BaseException:
        middleware.backend.release(key, [RUN_ITEM], owners)
        raise
    return message


def _resolve_schedulable(
    target: type[pw.Model] | Trigger | ScheduledAction, name: str | None
) -> Trigger | ScheduledAction:
    if isinstance(target, (Trigger, ScheduledAction)):
        if name is not None:
            raise TypeError("schedule(trigger_or_action) takes no name; "
                            "use schedule(Model, name) to name one.")
        return target
    if isinstance(target, type) and issubclass(target, pw.Model) and name is not None:
        from .declarations import scheduled_actions_of

        try:
            return resolve_trigger(target, name)
        except LookupError:
            for action in scheduled_actions_of(target):
                if action.name == name:
                    return action
            raise
    raise TypeError("schedule() takes (Model, name) or a Trigger or ScheduledAction.")
