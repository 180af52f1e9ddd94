"""An application for the ``dramatiq`` CLI: PostgreSQL and Redis.

    python -m examples.shop.seed          # create the table and 1,000 orders
    dramatiq examples.shop.tasks          # workers; the cron fires inside them
    python -m examples.shop.seed --report # how the orders stand

``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) and
``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) say where the services are.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import dramatiq
import peewee as pw
from dramatiq.brokers.redis import RedisBroker
from playhouse.db_url import connect

from dramatiq_triggers import (
    ActorPersister,
    SnoozeJob,
    TriggersMiddleware,
    current_actor,
    scheduled_action,
    trigger,
)

# A pooled database: the middleware closes the connection after each
# trigger message, which hands it back to the pool.
db = connect(
    os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test").replace(
        "postgresql://", "postgresql+pool://", 1
    ),
    max_connections=32,
    stale_timeout=300,
)


class User(pw.Model):
    name = pw.CharField(unique=True)

    class Meta:
        database = db
        table_name = "shop_user"


class Order(pw.Model):
    state = pw.CharField(default="paid", index=True)
    created_at = pw.DateTimeField(default=datetime.datetime.now)
    shipped_by = pw.CharField(null=True)
    ship_after = pw.DateTimeField(null=True)

    class Meta:
        database = db
        table_name = "shop_order"


class UserPersister(ActorPersister):
    """Users travel in messages as their id and are loaded back by it."""

    def store(self, actor: Any) -> Any:
        return actor.id

    def lookup(self, value: Any) -> Any:
        return None if value is None else User.get_by_id(value)


broker = RedisBroker(url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
broker.add_middleware(TriggersMiddleware(actor_persister=UserPersister()))
dramatiq.set_broker(broker)


def give_up(order: Order, error: BaseException) -> None:
    order.state = "failed"
    order.save()


@trigger(
    Order,
    where=Order.state == "paid",
    cron="*/10 * * * * *",
    max_attempts=3,
    backoff=lambda attempt: 1000 * attempt,
    on_error=give_up,
    default_actor=None,
)
def ship(order: Order) -> None:
    wait = (order.ship_after - datetime.datetime.now()).total_seconds() if order.ship_after else 0
    if wait > 0:
        # Not yet: come back then, without using up an attempt.
        raise SnoozeJob(wait)
    order.state = "shipped"
    actor = current_actor()
    order.shipped_by = actor.name if actor is not None else "cron"
    order.save()


@scheduled_action(Order, cron="0 * * * *")
def hourly_report() -> None:
    shipped = Order.select().where(Order.state == "shipped").count()
    print(f"{shipped} orders shipped so far")
