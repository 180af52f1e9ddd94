"""Create the shop's tables and orders, or report how the orders stand."""

from __future__ import annotations

import argparse
import datetime

import peewee as pw

from .tasks import Order, User, db


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--report", action="store_true")
    options = parser.parse_args()
    if options.report:
        for state, count in (Order.select(Order.state, pw.fn.COUNT(Order.id))
                             .group_by(Order.state).tuples()):
            print(f"{state:8} {count}")
        return
    db.drop_tables([Order, User])
    db.create_tables([User, Order])
    User.create(name="ops")
    with db.atomic():
        later = datetime.datetime.now() + datetime.timedelta(seconds=5)
        rows = [{"ship_after": later if number % 97 == 0 else None}
                for number in range(options.orders)]
        Order.insert_many(rows).execute()
    print(f"{options.orders} paid orders created")


if __name__ == "__main__":
    main()
