"""Triggers worked on by real ``dramatiq`` worker processes, with Redis as
the broker and PostgreSQL or MariaDB holding the rows.

The test process declares the same app as the workers (see ``apps.shop``),
enqueues the work, and checks the rows and the in-flight marks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.processes import Processes, trouble
from apps.settings import Settings
from apps.shop import DELIVER_ATTEMPTS, DELIVER_BACKOFF, Shop, build
from conftest import require_service

from dramatiq_triggers import Trigger, acting_as, build_trigger, run_trigger, run_triggers
from dramatiq_triggers.records import mark_item
from dramatiq_triggers.testing import wait_for

pytestmark = pytest.mark.integration

SHOP = "tests.integration.apps.shop_worker"
#: Seconds to wait for work a worker process has to boot for.
PATIENCE = 45.0
ACTOR = {"id": 7, "name": "ada"}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    yield running
    running.stop_all()


@pytest.fixture(params=["postgres", "mysql"])
def shop(request: pytest.FixtureRequest) -> Iterator[Shop]:
    require_service("redis")
    require_service(request.param)
    topic = {"postgres": "workers_pg", "mysql": "workers_my"}[request.param]
    settings = Settings.unique(topic, db=request.param)
    app = build(settings, run_cron=False)
    app.database.create_tables([app.Order])
    yield app
    app.database.drop_tables([app.Order])
    app.database.close()
    app.broker.close()
    settings.forget_keys()


def fresh(shop: Shop, order: Any) -> Any:
    return shop.Order.get_by_id(order.id)


def in_flight(shop: Shop, trigger: Trigger, orders: list[Any]) -> list[int]:
    """The ids of the orders that still have an in-flight mark for ``trigger``."""
    backend = shop.settings.backend()
    return [order.id for order in orders
            if backend.in_flight(trigger.worker_actor_name, mark_item(order.id, None))]


def test_a_worker_process_ships_the_paid_orders_it_is_sent_as_the_enqueuing_actor(
    shop: Shop, processes: Processes
) -> None:
    paid = [shop.Order.create(state="paid") for _ in range(8)]
    unpaid = [shop.Order.create(state="new") for _ in range(2)]
    with acting_as(ACTOR):
        sent = run_triggers(paid + unpaid, shop.ship)
    assert len(sent) == 10
    assert len(in_flight(shop, shop.ship, paid + unpaid)) == 10

    worker = processes.dramatiq(SHOP, shop.settings.env())
    name = shop.ship.worker_actor_name
    assert wait_for(lambda: shop.settings.processed(name) == 10, timeout=PATIENCE)

    for order in paid:
        shipped = fresh(shop, order)
        assert (shipped.state, shipped.note) == ("shipped", "in a trigger")
        assert shipped.actor == '{"id": 7, "name": "ada"}'
    for order in unpaid:
        assert (fresh(shop, order).state, fresh(shop, order).actor) == ("new", None)
    assert wait_for(lambda: in_flight(shop, shop.ship, paid + unpaid) == [])

    output = worker.stop()
    assert trouble(output) == []


def test_a_failing_action_is_retried_with_its_backoff_then_on_error_fails_the_order(
    shop: Shop, processes: Processes
) -> None:
    order = shop.Order.create(state="flaky")
    assert run_trigger(order, shop.deliver) is not None

    worker = processes.dramatiq(SHOP, shop.settings.env())
    assert wait_for(lambda: fresh(shop, order).state == "failed", timeout=PATIENCE)

    assert fresh(shop, order).note == f"after attempt {DELIVER_ATTEMPTS}: the carrier is down"
    attempts = shop.deliver_attempts(order.id)
    assert len(attempts) == DELIVER_ATTEMPTS
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert min(gaps) >= DELIVER_BACKOFF / 1000
    assert wait_for(lambda: in_flight(shop, shop.deliver, [order]) == [])

    # The retries are Dramatiq Retry signals and the final error is
    # handled by on_error: nothing in the log looks like a crash.
    output = worker.stop()
    assert "Retrying message" in output
    assert trouble(output) == []


def test_duplicate_messages_racing_for_one_order_bump_its_counter_exactly_once(
    shop: Shop, processes: Processes
) -> None:
    order = shop.Order.create()
    copies = 20
    # Straight to the broker: no in-flight mark keeps the duplicates out.
    for _ in range(copies):
        shop.broker.enqueue(build_trigger(order, shop.bump))

    worker = processes.dramatiq(SHOP, shop.settings.env(), processes=2, threads=8)
    name = shop.bump.worker_actor_name
    assert wait_for(lambda: shop.settings.processed(name) == copies, timeout=PATIENCE)

    assert fresh(shop, order).counter == 1
    assert shop.bump_calls() == 1
    output = worker.stop()
    assert trouble(output) == []


@pytest.mark.parametrize("shop", ["postgres"], indirect=True)
def test_the_dramatiq_cli_boots_the_app_and_stops_on_sigterm_without_errors(
    shop: Shop, processes: Processes
) -> None:
    worker = processes.dramatiq(SHOP, shop.settings.env(), processes=2, threads=2)
    assert worker.wait_for_output("Worker process is ready for action.", count=2,
                                  timeout=PATIENCE)
    assert worker.output().count("Cron started with 0 job(s).") == 2

    output = worker.stop()
    assert worker.returncode == 0
    assert output.count("Cron stopped.") == 2
    assert trouble(output) == []
