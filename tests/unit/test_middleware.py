"""TriggersMiddleware: the acting user stored in messages and looked up again
through an ``ActorPersister``, and database connections closed after each
trigger message a worker thread processes.

Every test here runs with a persister that stores a user's id and looks the
user up again, as an application with a users table would.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import peewee as pw
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import current_millis, dq_name

from dramatiq_triggers import (
    SnoozeJob,
    TriggersMiddleware,
    acting_as,
    current_actor,
    run_trigger,
    trigger,
)
from dramatiq_triggers.testing import assert_triggered, schedule_and_run_triggers

ACTOR_OPTION = "dramatiq_triggers_actor"


@dataclasses.dataclass(frozen=True)
class User:
    id: int
    name: str


USERS = {1: User(1, "alice"), 2: User(2, "bob"), 99: User(99, "system")}


class UserPersister:
    """Stores a user's id; looks the user up again, failing when asked to."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.lookups_to_fail = 0
        self.looked_up: list[Any] = []

    def store(self, actor: User) -> str:
        return f"{self.prefix}{actor.id}"

    def lookup(self, value: str | None) -> User | None:
        self.looked_up.append(value)
        if self.lookups_to_fail:
            self.lookups_to_fail -= 1
            raise ConnectionError("the users table is unreachable")
        if value is None:
            return None
        return USERS[int(value.removeprefix(self.prefix))]


@pytest.fixture
def persister() -> UserPersister:
    return UserPersister()


@pytest.fixture
def middleware(persister: UserPersister) -> TriggersMiddleware:
    return TriggersMiddleware(run_cron=False, actor_persister=persister)


@pytest.fixture
def order_model(sqlite_db: pw.SqliteDatabase) -> Iterator[type[pw.Model]]:
    class Order(pw.Model):
        state = pw.CharField(default="paid")

        class Meta:
            database = sqlite_db
            table_name = "middleware_order"

    sqlite_db.create_tables([Order])
    yield Order
    sqlite_db.drop_tables([Order])


def recording_actors(model: Any, seen: list[Any], **options: Any) -> Any:
    @trigger(model, cron=None, **options)
    def ship(order: Any) -> None:
        seen.append(current_actor())

    return ship


def join(broker: StubBroker, worker: dramatiq.Worker, *queue_names: str,
         timeout: int = 30_000) -> None:
    for name in queue_names:
        broker.join(name, fail_fast=False, timeout=timeout)
    worker.join()


# Storing and restoring the actor


def test_acting_as_stores_the_persisted_actor_in_the_message(stub_broker: StubBroker,
                                                             order_model: Any) -> None:
    seen: list[Any] = []
    ship = recording_actors(order_model, seen)

    order = order_model.create()
    with acting_as(USERS[1]):
        run_trigger(order, ship)

    assert assert_triggered(order, ship).options[ACTOR_OPTION] == "1"
    schedule_and_run_triggers(ship)
    assert seen == [USERS[1]]


def test_an_explicit_actor_wins_over_acting_as(stub_broker: StubBroker,
                                               order_model: Any) -> None:
    seen: list[Any] = []
    ship = recording_actors(order_model, seen)

    with acting_as(USERS[1]):
        run_trigger(order_model.create(), ship, actor=USERS[2])
    schedule_and_run_triggers(ship)

    assert seen == [USERS[2]]


def test_a_message_without_an_actor_has_no_current_actor(stub_broker: StubBroker,
                                                          order_model: Any,
                                                          persister: UserPersister) -> None:
    seen: list[Any] = []
    ship = recording_actors(order_model, seen)

    order = order_model.create()
    run_trigger(order, ship)

    assert ACTOR_OPTION not in assert_triggered(order, ship).options
    schedule_and_run_triggers(ship)
    assert seen == [None]
    assert persister.looked_up == [None]


def test_the_scheduler_passes_its_actor_to_the_worker_messages(stub_broker: StubBroker,
                                                               order_model: Any) -> None:
    seen: list[Any] = []

    @trigger(order_model)
    def ship(order: Any) -> None:
        seen.append(current_actor())

    order_model.create()
    order_model.create()
    result = schedule_and_run_triggers(ship, actor=USERS[2])

    assert result.success == 3
    assert seen == [USERS[2], USERS[2]]


def test_a_trigger_persister_replaces_the_middleware_one(stub_broker: StubBroker,
                                                         order_model: Any,
                                                         persister: UserPersister) -> None:
    seen: list[Any] = []
    own = UserPersister(prefix="user:")
    ship = recording_actors(order_model, seen, actor_persister=own)

    order = order_model.create()
    with acting_as(USERS[1]):
        run_trigger(order, ship)

    assert assert_triggered(order, ship).options[ACTOR_OPTION] == "user:1"
    schedule_and_run_triggers(ship)
    assert seen == [USERS[1]]
    assert own.looked_up == ["user:1"]
    assert persister.looked_up == []


def test_the_default_actor_is_used_when_the_message_has_none(stub_broker: StubBroker,
                                                             order_model: Any) -> None:
    seen: list[Any] = []
    ship = recording_actors(order_model, seen, default_actor=USERS[99])

    run_trigger(order_model.create(), ship)
    schedule_and_run_triggers(ship)

    assert seen == [USERS[99]]


def test_a_stored_actor_wins_over_the_default_actor(stub_broker: StubBroker,
                                                    order_model: Any) -> None:
    seen: list[Any] = []
    ship = recording_actors(order_model, seen, default_actor=USERS[99])

    with acting_as(USERS[1]):
        run_trigger(order_model.create(), ship)
    schedule_and_run_triggers(ship)

    assert seen == [USERS[1]]


def test_a_snoozed_message_is_sent_again_without_the_default_actor(
    stub_broker: StubBroker, order_model: Any
) -> None:
    seen: list[Any] = []

    @trigger(order_model, cron=None, default_actor=USERS[99])
    def ship(order: Any) -> None:
        seen.append(current_actor())
        raise SnoozeJob(60)

    run_trigger(order_model.create(), ship)
    result = schedule_and_run_triggers(ship)

    assert (result.snoozed, seen) == (1, [USERS[99]])
    [later] = [Message.decode(data) for data in stub_broker.queues[dq_name(ship.queue)].queue]
    assert ACTOR_OPTION not in later.options


def test_a_failed_lookup_fails_the_attempt_and_the_retry_runs(
    stub_broker: StubBroker, order_model: Any, persister: UserPersister,
    caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Any] = []
    ship = recording_actors(order_model, seen, max_attempts=2, backoff=0)

    with acting_as(USERS[1]):
        run_trigger(order_model.create(), ship)
    persister.lookups_to_fail = 1
    result = schedule_and_run_triggers(ship)

    assert (result.failure, result.success) == (1, 1)
    assert seen == [USERS[1]]
    assert persister.looked_up == ["1", "1"]
    [logged] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert logged.name.startswith("dramatiq_triggers.middleware")
    assert logged.exc_info is not None and isinstance(logged.exc_info[1], ConnectionError)


def test_a_failed_lookup_is_retried_after_the_trigger_backoff(
    stub_broker: StubBroker, order_model: Any, persister: UserPersister
) -> None:
    ship = recording_actors(order_model, [], max_attempts=2, backoff=60_000)

    with acting_as(USERS[1]):
        run_trigger(order_model.create(), ship)
    persister.lookups_to_fail = 1
    before = current_millis()
    result = schedule_and_run_triggers(ship)
    after = current_millis()

    assert result.failure == 1
    [retry] = [Message.decode(data) for data in stub_broker.queues[dq_name(ship.queue)].queue]
    assert before + 60_000 <= retry.options["eta"] <= after + 60_000
    assert retry.options[ACTOR_OPTION] == "1"


def test_a_failed_lookup_on_the_last_attempt_discards_the_job(stub_broker: StubBroker,
                                                              order_model: Any,
                                                              persister: UserPersister) -> None:
    seen: list[Any] = []
    ship = recording_actors(order_model, seen)

    with acting_as(USERS[1]):
        run_trigger(order_model.create(), ship)
    persister.lookups_to_fail = 1
    result = schedule_and_run_triggers(ship)

    assert result.discard == 1
    assert seen == []


def test_a_failed_lookup_does_not_stop_the_worker(stub_broker: StubBroker,
                                                  stub_worker: dramatiq.Worker,
                                                  order_model: Any,
                                                  persister: UserPersister) -> None:
    seen: list[Any] = []
    ship = recording_actors(order_model, seen, max_attempts=2, backoff=0)

    persister.lookups_to_fail = 1
    with acting_as(USERS[1]):
        run_trigger(order_model.create(), ship)
    # The retry waits for the trigger's backoff (none), not Dramatiq's 15 seconds.
    join(stub_broker, stub_worker, ship.queue, timeout=5_000)
    with acting_as(USERS[2]):
        run_trigger(order_model.create(), ship)
    join(stub_broker, stub_worker, ship.queue)

    assert seen == [USERS[1], USERS[2]]
    assert stub_broker.dead_letters == []


def test_messages_sent_from_an_action_carry_the_same_actor(stub_broker: StubBroker,
                                                           stub_worker: dramatiq.Worker,
                                                           order_model: Any) -> None:
    notified: list[Any] = []

    @dramatiq.actor(queue_name="middleware_notify")
    def notify(order_id: int) -> None:
        notified.append((order_id, current_actor()))

    @trigger(order_model, cron=None)
    def ship(order: Any) -> None:
        notify.send(order.id)

    order = order_model.create()
    with acting_as(USERS[2]):
        run_trigger(order, ship)
    join(stub_broker, stub_worker, ship.queue, "middleware_notify")

    assert notified == [(order.id, USERS[2])]


# Database connections


class CountingSqlite(pw.SqliteDatabase):
    """Counts the connections open at any moment, over all threads; can refuse them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_connections = 0
        self.unreachable = False
        self._counting = threading.Lock()

    def _connect(self) -> Any:
        if self.unreachable:
            raise pw.OperationalError("unable to open database file")
        connection = super()._connect()  # type: ignore[misc]
        with self._counting:
            self.open_connections += 1
        return connection

    def _close(self, connection: Any) -> None:
        super()._close(connection)  # type: ignore[misc]
        with self._counting:
            self.open_connections -= 1


def shipping_and_probing(model: Any, database: pw.Database,
                         probed: list[bool]) -> tuple[Any, Any]:
    @trigger(model, cron=None)
    def ship(order: Any) -> None:
        order.state = "shipped"
        order.save()

    @dramatiq.actor(queue_name="middleware_probe")
    def probe() -> None:
        probed.append(database.is_closed())

    return ship, probe


def test_a_worker_thread_closes_the_connection_a_trigger_message_opened(
    stub_broker: StubBroker, one_thread_worker: dramatiq.Worker, order_model: Any,
    sqlite_db: pw.SqliteDatabase
) -> None:
    probed: list[bool] = []
    ship, probe = shipping_and_probing(order_model, sqlite_db, probed)

    order = order_model.create()
    run_trigger(order, ship)
    join(stub_broker, one_thread_worker, ship.queue)
    probe.send()
    join(stub_broker, one_thread_worker, "middleware_probe")

    assert order_model.get_by_id(order.id).state == "shipped"
    # The probe ran on the worker's only thread, after the trigger message.
    assert probed == [True]


class AccountPersister:
    """Stores an account's id and reads the account back from the database."""

    def __init__(self) -> None:
        self.model: Any = None

    def store(self, actor: Any) -> int:
        return int(actor.id)

    def lookup(self, value: int | None) -> Any:
        return None if value is None else self.model.get_by_id(value)


ACCOUNTS = AccountPersister()


@pytest.mark.parametrize("middleware",
                         [TriggersMiddleware(run_cron=False, actor_persister=ACCOUNTS)])
def test_the_connection_is_closed_even_when_the_actor_lookup_opened_it(
    stub_broker: StubBroker, one_thread_worker: dramatiq.Worker, order_model: Any,
    sqlite_db: pw.SqliteDatabase
) -> None:
    class Account(pw.Model):
        name = pw.CharField()

        class Meta:
            database = sqlite_db
            table_name = "middleware_account"

    sqlite_db.create_tables([Account])
    ACCOUNTS.model = Account
    probed: list[bool] = []
    seen: list[Any] = []

    @trigger(order_model, cron=None)
    def greet(order: Any) -> None:
        seen.append(current_actor().name)

    @dramatiq.actor(queue_name="middleware_probe")
    def probe() -> None:
        probed.append(sqlite_db.is_closed())

    with acting_as(Account.create(name="carol")):
        run_trigger(order_model.create(), greet)
    join(stub_broker, one_thread_worker, greet.queue)
    probe.send()
    join(stub_broker, one_thread_worker, "middleware_probe")

    assert seen == ["carol"]
    assert probed == [True]


def test_an_unreachable_database_makes_the_message_wait_without_using_an_attempt(
    stub_broker: StubBroker, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    database = CountingSqlite(str(tmp_path / "unreachable.db"))

    class Parcel(pw.Model):
        class Meta:
            table_name = "middleware_parcel"

    Parcel._meta.set_database(database)
    database.create_tables([Parcel])
    parcel = Parcel.create()
    database.close()

    @trigger(Parcel, cron=None)
    def ship(parcel: Any) -> None:
        pass

    run_trigger(parcel, ship)
    database.unreachable = True
    result = schedule_and_run_triggers(ship)

    # Nothing ran, so nothing failed: the message comes back in a second,
    # with its attempts untouched, and the middleware did not break.
    assert (result.snoozed, result.failure, result.discard) == (1, 0, 0)
    assert result.queues_not_drained == (ship.queue,)
    [waiting] = [Message.decode(data) for data in stub_broker.queues[dq_name(ship.queue)].queue]
    assert waiting.options.get("retries", 0) == 0
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    [warning] = [r for r in caplog.records if r.name == "dramatiq_triggers.worker"
                 and r.levelno == logging.WARNING]
    assert "unable to open database file" in warning.getMessage()

    database.unreachable = False
    stub_broker.queues[dq_name(ship.queue)].get_nowait()
    stub_broker.queues[dq_name(ship.queue)].task_done()
    stub_broker.queues[ship.queue].put(waiting.copy(queue_name=ship.queue).encode())
    assert schedule_and_run_triggers(ship).success == 1


@pytest.mark.parametrize("middleware",
                         [TriggersMiddleware(run_cron=False, close_connections=False)])
def test_close_connections_false_leaves_the_connection_open(
    stub_broker: StubBroker, one_thread_worker: dramatiq.Worker, order_model: Any,
    sqlite_db: pw.SqliteDatabase
) -> None:
    probed: list[bool] = []
    ship, probe = shipping_and_probing(order_model, sqlite_db, probed)

    run_trigger(order_model.create(), ship)
    join(stub_broker, one_thread_worker, ship.queue)
    probe.send()
    join(stub_broker, one_thread_worker, "middleware_probe")

    assert probed == [False]


def test_no_connection_stays_open_after_the_worker_processed_trigger_messages(
    stub_broker: StubBroker, stub_worker: dramatiq.Worker, tmp_path: Any
) -> None:
    database = CountingSqlite(str(tmp_path / "counting.db"), pragmas={"journal_mode": "wal"},
                              timeout=10)

    class Parcel(pw.Model):
        state = pw.CharField(default="paid")

        class Meta:
            table_name = "middleware_parcel"

    Parcel._meta.set_database(database)
    database.create_tables([Parcel])
    parcels = [Parcel.create() for _ in range(6)]
    database.close()

    @trigger(Parcel, where=Parcel.state == "paid", cron=None)
    def ship(parcel: Any) -> None:
        parcel.state = "shipped"
        parcel.save()

    for parcel in parcels:
        run_trigger(parcel, ship)
    database.close()
    join(stub_broker, stub_worker, ship.queue)

    assert database.open_connections == 0
    assert Parcel.select().where(Parcel.state == "shipped").count() == 6
    database.close()


def test_an_actor_that_is_not_json_without_a_persister_names_the_fix(
    sqlite_db: pw.SqliteDatabase,
) -> None:
    broker = StubBroker()
    broker.add_middleware(TriggersMiddleware(run_cron=False))
    dramatiq.set_broker(broker)

    class Ticket(pw.Model):
        state = pw.CharField(default="open")

        class Meta:
            database = sqlite_db
            table_name = "mw_ticket"

    sqlite_db.create_tables([Ticket])

    @trigger(Ticket, cron=None)
    def close(ticket: Ticket) -> None:
        pass

    with pytest.raises(TypeError, match="actor_persister"), acting_as(User(1, "alice")):
        run_trigger(Ticket.create(), close)
    broker.close()


def test_a_plain_actor_sent_with_an_actor_that_cannot_be_stored_is_refused(
    sqlite_db: pw.SqliteDatabase,
) -> None:
    from dramatiq_triggers.errors import ActorStoreError

    broker = StubBroker()
    broker.add_middleware(TriggersMiddleware(run_cron=False))
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name="mw_plain_refused")
    def notify() -> None:
        pass

    with pytest.raises(ActorStoreError, match="actor_persister"), acting_as(User(1, "alice")):
        notify.send()
    assert broker.queues["mw_plain_refused"].qsize() == 0
    broker.close()


def test_a_scheduled_action_with_a_model_gets_its_connection_closed_too(
    stub_broker: StubBroker, one_thread_worker: dramatiq.Worker, order_model: Any,
    sqlite_db: pw.SqliteDatabase
) -> None:
    from dramatiq_triggers import schedule, scheduled_action

    probed: list[bool] = []
    counted: list[int] = []

    @scheduled_action(order_model, cron="0 * * * *")
    def count_orders() -> None:
        counted.append(order_model.select().count())

    @dramatiq.actor(queue_name="middleware_probe")
    def probe() -> None:
        probed.append(sqlite_db.is_closed())

    order_model.create()
    schedule(count_orders)
    join(stub_broker, one_thread_worker, count_orders.queue)
    probe.send()
    join(stub_broker, one_thread_worker, "middleware_probe")

    assert counted == [1]
    assert probed == [True]
