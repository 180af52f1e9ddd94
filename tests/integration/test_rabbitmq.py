"""Triggers with RabbitMQ as the broker: the coordination backend is Redis,
given explicitly, and the rows live in PostgreSQL.

The app is ``apps.shop`` built with ``DT_BROKER=rabbitmq``; its queues are
named after a table no other test uses, and deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import peewee as pw
import pika
import pytest
from apps.processes import Processes, trouble
from apps.settings import RABBITMQ_URL, Settings
from apps.shop import DELIVER_ATTEMPTS, Shop, build
from conftest import require_service
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name

from dramatiq_triggers import (
    TriggerDeclarationError,
    TriggersMiddleware,
    acting_as,
    info,
    run_trigger,
    run_triggers,
    trigger,
)
from dramatiq_triggers.records import mark_item
from dramatiq_triggers.testing import wait_for

pytestmark = pytest.mark.integration

SHOP = "tests.integration.apps.shop_worker"
PATIENCE = 45.0


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop_all()


def delete_queues(names: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for name in names:
            for queue in (name, dq_name(name), xq_name(name)):
                channel.queue_delete(queue=queue)
    finally:
        connection.close()


@pytest.fixture
def shop() -> Iterator[Shop]:
    for service in ("rabbitmq", "redis", "postgres"):
        require_service(service)
    settings = Settings.unique("rabbitmq", broker="rabbitmq")
    app = build(settings, run_cron=False)
    app.database.create_tables([app.Order])
    yield app
    app.database.drop_tables([app.Order])
    app.database.close()
    app.broker.close()
    delete_queues([app.ship.queue, app.bump.queue, app.deliver.queue])
    settings.forget_keys()


def fresh(shop: Shop, order: Any) -> Any:
    return shop.Order.get_by_id(order.id)


def test_a_worker_process_on_rabbitmq_ships_the_paid_orders_it_is_sent(
    shop: Shop, processes: Processes
) -> None:
    assert isinstance(shop.broker, RabbitmqBroker)
    orders = [shop.Order.create(state="paid") for _ in range(5)]
    with acting_as({"id": 3}):
        assert len(run_triggers(orders, shop.ship)) == 5

    worker = processes.dramatiq(SHOP, shop.settings.env())
    assert wait_for(lambda: all(fresh(shop, o).state == "shipped" for o in orders),
                    timeout=PATIENCE)

    assert {fresh(shop, order).actor for order in orders} == {'{"id": 3}'}
    backend = shop.settings.backend()
    name = shop.ship.worker_actor_name
    assert wait_for(lambda: not any(backend.in_flight(name, mark_item(order.id, None))
                                    for order in orders))
    output = worker.stop()
    assert trouble(output) == []


def test_retries_on_rabbitmq_wait_in_its_delay_queue_then_on_error_fails_the_order(
    shop: Shop, processes: Processes
) -> None:
    order = shop.Order.create(state="flaky")
    assert run_trigger(order, shop.deliver) is not None

    worker = processes.dramatiq(SHOP, shop.settings.env())
    assert wait_for(lambda: fresh(shop, order).state == "failed", timeout=PATIENCE)

    assert fresh(shop, order).note == f"after attempt {DELIVER_ATTEMPTS}: the carrier is down"
    assert len(shop.deliver_attempts(order.id)) == DELIVER_ATTEMPTS
    output = worker.stop()
    assert trouble(output) == []


class Parcel(pw.Model):
    state = pw.CharField(default="new")

    class Meta:
        database = pw.SqliteDatabase(":memory:")


@pytest.fixture
def rabbitmq_broker_without_backend() -> Iterator[RabbitmqBroker]:
    # Declaring actors on a RabbitmqBroker connects to nothing yet.
    broker = RabbitmqBroker(url=RABBITMQ_URL)
    broker.add_middleware(TriggersMiddleware())
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


def test_triggers_middleware_on_rabbitmq_without_a_backend_is_refused_at_declaration(
    rabbitmq_broker_without_backend: RabbitmqBroker,
) -> None:
    with pytest.raises(TriggerDeclarationError, match=r"RedisBackend\(url="):

        @trigger(Parcel, where=Parcel.state == "new")
        def send(parcel: Parcel) -> None:
            pass


def test_a_declaration_refused_for_a_missing_backend_leaves_no_trigger_behind(
    rabbitmq_broker_without_backend: RabbitmqBroker,
) -> None:
    with pytest.raises(TriggerDeclarationError):

        @trigger(Parcel, where=Parcel.state == "new")
        def send(parcel: Parcel) -> None:
            pass

    assert info.triggers(Parcel) == []
