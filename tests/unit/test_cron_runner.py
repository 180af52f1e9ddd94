"""The cron inside one process: which jobs it registers, and how a fire
claims its tick so that several processes enqueue each tick once."""

from __future__ import annotations

import datetime

import peewee as pw
import pytest
from dramatiq.brokers.stub import StubBroker

from dramatiq_triggers import StubBackend, Trigger, TriggersMiddleware, scheduled_action, trigger
from dramatiq_triggers import cron_runner as cron_runner_module
from dramatiq_triggers.cron_runner import CronRunner, job_id
from dramatiq_triggers.enqueue import RUN_ITEM


@pytest.fixture
def Order(sqlite_db: pw.SqliteDatabase) -> type[pw.Model]:
    class Order(pw.Model):
        state = pw.CharField(default="paid")

        class Meta:
            database = sqlite_db
            table_name = "cron_order"

    sqlite_db.create_tables([Order])
    return Order


def queued(broker: StubBroker, queue_name: str) -> int:
    return broker.queues[queue_name].qsize()


def at(runner_module: object, monkeypatch: pytest.MonkeyPatch, when: datetime.datetime) -> None:
    """Make the cron believe it is ``when``."""

    class FrozenDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> FrozenDatetime:  # type: ignore[override]
            return cls.fromtimestamp(when.timestamp(), tz)

    monkeypatch.setattr(cron_runner_module.datetime, "datetime", FrozenDatetime)


def ship_trigger(Order: type[pw.Model], **options: object) -> Trigger:
    options.setdefault("cron", "*/5 * * * *")

    @trigger(Order, where=Order.state == "paid", **options)  # type: ignore[arg-type]
    def ship(order: pw.Model) -> None:
        pass

    return ship


def test_a_tick_is_enqueued_once_even_when_its_scheduler_already_finished(
    stub_broker: StubBroker, middleware: TriggersMiddleware, Order: type[pw.Model],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ship = ship_trigger(Order)
    first, second = CronRunner(middleware), CronRunner(middleware)
    first.add(ship)
    second.add(ship)
    at(cron_runner_module, monkeypatch,
       datetime.datetime(2026, 12, 6, 10, 5, 2, tzinfo=datetime.timezone.utc))

    assert first.fire(ship) is True
    # The scheduler ran and ended: its in-flight mark is gone, only the
    # tick claim stands between the second process and a duplicate.
    middleware.backend.release(ship.scheduler_actor_name, [RUN_ITEM])
    assert second.fire(ship) is False
    assert queued(stub_broker, ship.scheduler_queue) == 1


def test_the_next_tick_is_claimed_afresh(
    stub_broker: StubBroker, middleware: TriggersMiddleware, Order: type[pw.Model],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ship = ship_trigger(Order)
    runner = CronRunner(middleware)
    runner.add(ship)
    at(cron_runner_module, monkeypatch,
       datetime.datetime(2026, 12, 6, 10, 5, 2, tzinfo=datetime.timezone.utc))
    assert runner.fire(ship) is True
    middleware.backend.release(ship.scheduler_actor_name, [RUN_ITEM])

    at(cron_runner_module, monkeypatch,
       datetime.datetime(2026, 12, 6, 10, 10, 1, tzinfo=datetime.timezone.utc))
    assert runner.fire(ship) is True
    assert queued(stub_broker, ship.scheduler_queue) == 2


def test_a_tick_is_skipped_while_the_previous_run_is_in_flight(
    stub_broker: StubBroker, middleware: TriggersMiddleware, Order: type[pw.Model],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ship = ship_trigger(Order)
    runner = CronRunner(middleware)
    runner.add(ship)
    at(cron_runner_module, monkeypatch,
       datetime.datetime(2026, 12, 6, 10, 5, 2, tzinfo=datetime.timezone.utc))
    assert runner.fire(ship) is True

    at(cron_runner_module, monkeypatch,
       datetime.datetime(2026, 12, 6, 10, 10, 1, tzinfo=datetime.timezone.utc))
    assert runner.fire(ship) is False
    assert queued(stub_broker, ship.scheduler_queue) == 1


def test_a_tick_missed_by_more_than_the_grace_time_is_not_fired(
    stub_broker: StubBroker, middleware: TriggersMiddleware, Order: type[pw.Model],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ship = ship_trigger(Order)
    runner = CronRunner(middleware)
    runner.add(ship)
    late = middleware.cron_misfire_grace + 1
    at(cron_runner_module, monkeypatch,
       datetime.datetime(2026, 12, 6, 10, 5, late, tzinfo=datetime.timezone.utc))

    assert runner.fire(ship) is False
    assert queued(stub_broker, ship.scheduler_queue) == 0


def test_ticks_are_read_in_the_middlewares_time_zone(
    sqlite_db: pw.SqliteDatabase, Order: type[pw.Model], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dramatiq

    broker = StubBroker()
    middleware = TriggersMiddleware(run_cron=False, timezone="Europe/Paris")
    broker.add_middleware(middleware)
    dramatiq.set_broker(broker)

    @scheduled_action(cron="0 9 * * *")
    def morning() -> None:
        pass

    runner = CronRunner(middleware)
    runner.add(morning)
    # 09:00 in Paris on a December day is 08:00 UTC.
    at(cron_runner_module, monkeypatch,
       datetime.datetime(2026, 12, 7, 8, 0, 1, tzinfo=datetime.timezone.utc))
    assert runner.fire(morning) is True
    at(cron_runner_module, monkeypatch,
       datetime.datetime(2026, 12, 8, 9, 0, 1, tzinfo=datetime.timezone.utc))
    assert runner.fire(morning) is False


def test_paused_deleted_and_cronless_declarations_get_no_cron_job(
    stub_broker: StubBroker, middleware: TriggersMiddleware, Order: type[pw.Model],
) -> None:
    active = ship_trigger(Order, name="active")
    ship_trigger(Order, name="paused", state="paused")
    ship_trigger(Order, name="deleted", state="deleted")
    ship_trigger(Order, name="by_hand", cron=None)

    runner = CronRunner(middleware)
    runner.start()
    try:
        assert [job.id for job in runner.scheduler.get_jobs()] == [job_id(active)]
    finally:
        runner.stop()


def test_the_cron_starts_with_the_worker_and_stops_with_it(
    Order: type[pw.Model],
) -> None:
    import dramatiq

    broker = StubBroker()
    middleware = TriggersMiddleware(backend=StubBackend())
    broker.add_middleware(middleware)
    dramatiq.set_broker(broker)
    ship = ship_trigger(Order)

    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    worker.start()
    try:
        assert middleware._cron is not None
        assert [job.id for job in middleware._cron.scheduler.get_jobs()] == [job_id(ship)]
    finally:
        worker.stop()
    assert middleware._cron is None
