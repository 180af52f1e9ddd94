"""Introspection of the declared triggers and scheduled actions."""

from __future__ import annotations

import peewee as pw

from .declarations import (
    ScheduledAction,
    Trigger,
    all_declarations,
    resolve_trigger,
    scheduled_actions_of,
    triggers_of,
)

__all__ = ["all_scheduled_actions", "all_triggers", "scheduled_actions", "trigger", "triggers"]


def triggers(model: type[pw.Model]) -> list[Trigger]:
    """The triggers declared on ``model``, in declaration order."""
    return triggers_of(model)


def trigger(model: type[pw.Model], name: str) -> Trigger:
    """The trigger ``name`` of ``model``; ``LookupError`` if there is none."""
    return resolve_trigger(model, name)


def scheduled_actions(model: type[pw.Model] | None = None) -> list[ScheduledAction]:
    """The scheduled actions grouped under ``model`` (None: those with no model)."""
    return scheduled_actions_of(model)


def all_triggers() -> list[Trigger]:
    """Every declared trigger, of every model."""
    return [d for d in all_declarations() if isinstance(d, Trigger)]


def all_scheduled_actions() -> list[ScheduledAction]:
    """Every declared scheduled action."""
    return [d for d in all_declarations() if isinstance(d, ScheduledAction)]
