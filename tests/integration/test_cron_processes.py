"""The cron across processes: every worker process runs it, and each tick
of each cron job is still enqueued once.

``apps.clock`` has a scheduled action on ``* * * * * *`` that leaves one row
per run, stamped with the moment its tick was claimed; two ``dramatiq``
groups (two "hosts") and a standalone cron process all run its cron.
"""

from __future__ import annotations

import collections
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import peewee as pw
import pytest
from apps.clock import IDLE_CRON, Clock, build
from apps.processes import ROOT, Processes, trouble
from apps.settings import Settings
from conftest import require_service

from dramatiq_triggers import TriggersMiddleware, scheduled_action, trigger
from dramatiq_triggers.cron_runner import CronRunner, job_id

pytestmark = pytest.mark.integration

CLOCK = "tests.integration.apps.clock_worker"
PATIENCE = 45.0
#: Seconds the cron runs with every process up, then with the first group gone:
#: thirty in all.
ALL_UP = 18
SURVIVORS = 12
#: The share of ticks that must have run: a loaded machine may skip a few,
#: when a tick comes while the previous run is still in flight.
ENOUGH = 0.75


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop_all()


@pytest.fixture
def clock() -> Iterator[Clock]:
    require_service("redis")
    require_service("postgres")
    settings = Settings.unique("cron", cron="* * * * * *")
    app = build(settings, run_cron=False)
    app.database.create_tables([app.Tick])
    yield app
    app.database.drop_tables([app.Tick])
    app.database.close()
    app.broker.close()
    settings.forget_keys()


def seconds_between(start: float, stop: float) -> range:
    """The whole seconds in [start, stop)."""
    return range(math.ceil(start), math.ceil(stop))


@pytest.mark.slow
def test_each_tick_runs_once_across_two_worker_groups_and_a_cron_process(
    clock: Clock, processes: Processes
) -> None:
    env = clock.settings.env()
    booting = time.time()
    first = processes.dramatiq(CLOCK, env, processes=2, threads=2)
    second = processes.dramatiq(CLOCK, env, processes=1, threads=2)
    cron = processes.cron(CLOCK, env)
    # Two cron jobs each: the paused action and the paused trigger get none.
    for process, runners in ((first, 2), (second, 1), (cron, 1)):
        assert process.wait_for_output("Cron started with 2 job(s).", count=runners,
                                       timeout=PATIENCE), process.output()

    all_up = time.time()
    time.sleep(ALL_UP)
    outputs = [first.stop()]
    survivors_only = time.time()
    time.sleep(SURVIVORS)
    end = time.time()
    outputs += [second.stop(), cron.stop()]
    stopped = time.time()

    Tick = clock.Tick
    stamps = [row.stamp for row in Tick.select().where(Tick.name == "tick")]
    per_second = collections.Counter(stamp // 1000 for stamp in stamps)
    assert [second for second, runs in per_second.items() if runs > 1] == []

    for start, stop in ((all_up, survivors_only), (survivors_only, end)):
        expected = seconds_between(start, stop)
        ran = [second for second in expected if second in per_second]
        assert len(ran) >= ENOUGH * len(expected), (len(ran), len(expected))
    assert min(per_second) >= math.floor(booting)

    # The trigger fires every other second, its scheduler once per tick.
    schedulers = clock.settings.processed(clock.idle.scheduler_actor_name)
    even_seconds = len(range(math.ceil(booting / 2), math.floor(stopped / 2) + 1))
    assert IDLE_CRON == "*/2 * * * * *"
    assert ENOUGH * (end - all_up) / 2 <= schedulers <= even_seconds

    assert clock.settings.processed(clock.paused_tick.actor_name) == 0
    assert clock.settings.processed(clock.paused_sweep.scheduler_actor_name) == 0
    assert Tick.select().where(Tick.name.in_(["paused_tick", "swept"])).count() == 0

    assert [process.returncode for process in (first, second, cron)] == [0, 0, 0]
    for output in outputs:
        assert trouble(output) == []
        assert "Cron stopped." in output


def test_the_cron_process_refuses_modules_whose_broker_has_no_triggers_middleware() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "dramatiq_triggers.cron_process", "tests.integration.apps"],
        cwd=ROOT, capture_output=True, text=True, timeout=PATIENCE,
    )

    assert finished.returncode == 2
    assert "has no TriggersMiddleware" in finished.stderr
    assert trouble(finished.stderr) == []


class Lamp(pw.Model):
    state = pw.CharField(default="off")

    class Meta:
        database = pw.SqliteDatabase(":memory:")


def test_only_active_declarations_with_a_cron_get_a_cron_job(
    stub_broker: dramatiq.Broker, middleware: TriggersMiddleware
) -> None:
    @trigger(Lamp, where=Lamp.state == "on", cron="* * * * * *")
    def switch_off(lamp: Lamp) -> None:
        pass

    @trigger(Lamp, where=Lamp.state == "on", cron="* * * * * *", state="paused")
    def paused(lamp: Lamp) -> None:
        pass

    @trigger(Lamp, where=Lamp.state == "on", cron="* * * * * *", state="deleted")
    def deleted(lamp: Lamp) -> None:
        pass

    @trigger(Lamp, where=Lamp.state == "on", cron=None)
    def on_demand(lamp: Lamp) -> None:
        pass

    @scheduled_action(Lamp, cron="*/2 * * * * *", state="paused")
    def paused_check() -> None:
        pass

    @scheduled_action(Lamp, cron="*/2 * * * * *")
    def check() -> None:
        pass

    runner = CronRunner(middleware)
    for declaration in (switch_off, paused, deleted, on_demand, paused_check, check):
        runner.add(declaration)

    jobs = sorted(job.id for job in runner.scheduler.get_jobs())
    assert jobs == sorted([job_id(switch_off), job_id(check)])
