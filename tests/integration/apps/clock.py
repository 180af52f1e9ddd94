"""A clock for the cron tests: cron jobs on seconds crontabs, run by several
processes at once, each run leaving a row behind.

* ``tick`` (a scheduled action on ``settings.cron``) inserts one ``Tick``
  row per run with the time its message was created, which is the moment
  the cron claimed the tick, and the pid of the worker that ran it.
* ``idle`` (a trigger on ``*/2 * * * * *``) matches no row; the tests count
  its scheduler runs.
* ``paused_tick`` and ``paused_sweep`` are paused: they must never run.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import dramatiq
import peewee as pw
from dramatiq.middleware import CurrentMessage

from dramatiq_triggers import ScheduledAction, Trigger, scheduled_action, trigger

from .settings import Settings

IDLE_CRON = "*/2 * * * * *"


@dataclasses.dataclass
class Clock:
    settings: Settings
    database: pw.Database
    broker: dramatiq.Broker
    Tick: Any
    tick: ScheduledAction
    idle: Trigger
    paused_tick: ScheduledAction
    paused_sweep: Trigger


def build(settings: Settings, *, run_cron: bool = True) -> Clock:
    database = settings.database()
    broker = settings.make_broker(run_cron=run_cron)

    class Tick(pw.Model):
        name = pw.CharField()
        stamp = pw.BigIntegerField()
        pid = pw.IntegerField()

        class Meta:
            table_name = settings.table

    Tick._meta.set_database(database)

    def record(name: str) -> None:
        message = CurrentMessage.get_current_message()
        stamp = message.message_timestamp if message is not None else 0
        Tick.create(name=name, stamp=stamp, pid=os.getpid())

    @scheduled_action(Tick, cron=settings.cron)
    def tick() -> None:
        record("tick")

    @scheduled_action(Tick, cron=settings.cron, state="paused")
    def paused_tick() -> None:
        record("paused_tick")

    @trigger(Tick, where=Tick.name == "never", cron=IDLE_CRON)
    def idle(row: Tick) -> None:
        row.name = "idle"
        row.save()

    @trigger(Tick, where=Tick.name == "tick", cron="* * * * * *", state="paused")
    def paused_sweep(row: Tick) -> None:
        row.name = "swept"
        row.save()

    return Clock(settings, database, broker, Tick, tick, idle, paused_tick, paused_sweep)
