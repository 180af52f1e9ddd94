"""How the acting user travels inside a message: stored as JSON at enqueue
time, looked up again before the message is processed."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ActorPersister(Protocol):
    """Turns an actor into a JSON value and back.

    ``store`` runs when a message is enqueued inside ``acting_as`` (or
    with ``actor=``); its result must be JSON-serializable.  ``lookup``
    runs before the message is processed, with the stored value or with
    None when the message carries no actor; what it returns is
    ``current_actor()``.  An exception from ``lookup`` fails that attempt,
    which is retried like any other failure, after the trigger's backoff.
    """

    def store(self, actor: Any) -> Any: ...

    def lookup(self, value: Any) -> Any: ...


class JSONPersister:
    """The default persister: the actor itself is the stored JSON value.

    It suits actors that are already plain data (an id, a dict).  For model
    instances, give the middleware a persister that stores the primary key
    and loads the row back.
    """

    def store(self, actor: Any) -> Any:
        try:
            json.dumps(actor)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"The actor {actor!r} cannot be stored in a message as it is ({error}). Give "
                "TriggersMiddleware(actor_persister=...) (or the trigger's actor_persister) a "
                "persister that stores it as an id and looks it up again."
            ) from None
        return actor

    def lookup(self, value: Any) -> Any:
        return value
