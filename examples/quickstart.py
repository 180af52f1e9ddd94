"""The first example: triggers on SQLite with an in-process broker and worker.

Run it with ``python examples/quickstart.py``; it needs no server.  It
declares a trigger that ships paid orders, starts a Dramatiq worker in this
process (its cron fires the trigger every second), and prints what happened:
orders shipped, one order that failed three times and was marked failed by
``on_error``, and the user each order was shipped for.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time

import dramatiq
import peewee as pw
from dramatiq.brokers.stub import StubBroker

from dramatiq_triggers import (
    TriggersMiddleware,
    acting_as,
    current_actor,
    in_trigger,
    run_trigger,
    trigger,
)

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

# A file, not ":memory:": each worker thread opens its own connection.
db = pw.SqliteDatabase(os.path.join(tempfile.mkdtemp(), "shop.db"))

broker = StubBroker()
broker.add_middleware(TriggersMiddleware())
dramatiq.set_broker(broker)


class Order(pw.Model):
    customer = pw.CharField()
    state = pw.CharField(default="paid")
    shipped_by = pw.CharField(null=True)

    class Meta:
        database = db


def mark_failed(order: Order, error: BaseException) -> None:
    order.state = "failed"
    order.save()
    print(f"  order {order.id} ({order.customer}) failed for good: {error}")


@trigger(
    Order,
    where=Order.state == "paid",
    cron="* * * * * *",  # every second; seconds come first in a 6-field crontab
    max_attempts=3,
    backoff=100,  # milliseconds between attempts
    on_error=mark_failed,
    log_errors=False,
    log_final_error=False,
)
def ship(order: Order) -> None:
    assert in_trigger()
    if order.customer == "mallory":
        raise RuntimeError("the address does not exist")
    order.state = "shipped"
    order.shipped_by = str(current_actor() or "the cron")
    order.save()
    print(f"  shipped order {order.id} for {order.customer} (acting as {order.shipped_by})")


def main() -> int:
    db.create_tables([Order])
    for customer in ("alice", "bob", "carol", "mallory"):
        Order.create(customer=customer)
    print("4 paid orders; starting a worker whose cron runs the 'ship' trigger every second")

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while Order.select().where(Order.state == "paid").exists():
            if time.monotonic() > deadline:
                print("gave up waiting for the trigger")
                return 1
            time.sleep(0.1)

        print("a new order, run right away on behalf of a user:")
        dave = Order.create(customer="dave")
        with acting_as("support-agent-7"):
            run_trigger(dave, ship)
        deadline = time.monotonic() + 10
        while Order.get_by_id(dave.id).state == "paid" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()

    print("final state:")
    for order in Order.select().order_by(Order.id):
        print(f"  {order.id} {order.customer:8} {order.state:8} {order.shipped_by or ''}")
    states = sorted(order.state for order in Order.select())
    return 0 if states == ["failed", "shipped", "shipped", "shipped", "shipped"] else 1


if __name__ == "__main__":
    sys.exit(main())
