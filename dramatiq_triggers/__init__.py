"""Dramatiq jobs that fire on the state of your data.

Declare a trigger on a peewee model (a ``where`` filter, an action on one
record, a cron); the scheduler finds every matching row and the worker runs
the action on it under a row lock, with retries, error handling and the
acting user carried along.
"""

from __future__ import annotations

from . import info
from .backends import Backend, RedisBackend, StubBackend
from .context import Job, acting_as, current_actor, current_job, in_trigger
from .declarations import ScheduledAction, Trigger, scheduled_action, trigger
from .enqueue import build_trigger, run_trigger, run_triggers, schedule
from .errors import (
    CancelJob,
    SnoozeJob,
    TriggerDeclarationError,
    TriggerNoLongerApplies,
    TriggersError,
)
from .middleware import TriggersMiddleware
from .persister import ActorPersister, JSONPersister

__all__ = [
    "ActorPersister",
    "Backend",
    "CancelJob",
    "JSONPersister",
    "Job",
    "RedisBackend",
    "ScheduledAction",
    "SnoozeJob",
    "StubBackend",
    "Trigger",
    "TriggerDeclarationError",
    "TriggerNoLongerApplies",
    "TriggersError",
    "TriggersMiddleware",
    "acting_as",
    "build_trigger",
    "current_actor",
    "current_job",
    "in_trigger",
    "info",
    "run_trigger",
    "run_triggers",
    "schedule",
    "scheduled_action",
    "trigger",
]

__version__ = "0.1.0"
