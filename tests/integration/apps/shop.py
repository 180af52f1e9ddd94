"""A shop whose orders are worked on by triggers with no cron: the tests
enqueue the work themselves and a real ``dramatiq`` worker does it.

* ``ship`` turns a paid order into a shipped one and writes down, in the
  row, the actor it acted for and whether it ran inside a trigger.
* ``bump`` adds one to an order's counter while it is 0, slowly, and counts
  its calls in Redis: the row lock must let exactly one call through.
* ``deliver`` always fails; after its last attempt ``give_up`` marks the
  order failed.  Each attempt's time is kept in Redis.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import dramatiq
import peewee as pw
import redis

from dramatiq_triggers import Trigger, current_actor, current_job, in_trigger, trigger

from .settings import Settings

#: How long ``bump`` holds the row lock, in seconds.
BUMP_SECONDS = 0.2
#: The backoff between ``deliver`` attempts, in milliseconds.
DELIVER_BACKOFF = 300
DELIVER_ATTEMPTS = 3


@dataclasses.dataclass
class Shop:
    settings: Settings
    database: pw.Database
    broker: dramatiq.Broker
    redis: redis.Redis
    Order: Any
    ship: Trigger
    bump: Trigger
    deliver: Trigger

    def calls_key(self) -> str:
        return f"{self.settings.prefix}:bump_calls"

    def attempts_key(self, order_id: int) -> str:
        return f"{self.settings.prefix}:deliver_attempts:{order_id}"

    def bump_calls(self) -> int:
        return int(self.redis.get(self.calls_key()) or 0)

    def deliver_attempts(self, order_id: int) -> list[float]:
        return [float(value) for value in self.redis.lrange(self.attempts_key(order_id), 0, -1)]


def build(settings: Settings, *, run_cron: bool = True) -> Shop:
    database = settings.database()
    broker = settings.make_broker(run_cron=run_cron)
    client = settings.redis()

    class Order(pw.Model):
        state = pw.CharField(default="new")
        counter = pw.IntegerField(default=0)
        actor = pw.TextField(null=True)
        note = pw.TextField(null=True)

        class Meta:
            table_name = settings.table

    Order._meta.set_database(database)

    @trigger(Order, where=Order.state == "paid", cron=None)
    def ship(order: Order) -> None:
        order.state = "shipped"
        order.actor = json.dumps(current_actor())
        order.note = "in a trigger" if in_trigger() else "outside of triggers"
        order.save()

    @trigger(Order, where=Order.counter == 0, cron=None)
    def bump(order: Order) -> None:
        client.incr(f"{settings.prefix}:bump_calls")
        # Added in SQL, so that every call that got this far would count.
        Order.update(counter=Order.counter + 1).where(Order.id == order.id).execute()
        # Keep the lock a while, so the duplicates pile up behind it.
        time.sleep(BUMP_SECONDS)

    def give_up(order: Order, error: BaseException) -> None:
        job = current_job()
        attempt = job.attempt if job is not None else None
        order.state = "failed"
        order.note = f"after attempt {attempt}: {error}"
        order.save()

    @trigger(Order, where=Order.state == "flaky", cron=None, max_attempts=DELIVER_ATTEMPTS,
             backoff=DELIVER_BACKOFF, on_error=give_up, log_errors=False,
             log_final_error=False)
    def deliver(order: Order) -> None:
        client.rpush(f"{settings.prefix}:deliver_attempts:{order.id}", repr(time.time()))
        raise RuntimeError("the carrier is down")

    return Shop(settings, database, broker, client, Order, ship, bump, deliver)
