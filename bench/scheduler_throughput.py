"""Scheduler throughput: how fast the scheduler turns matching rows into
queued worker messages, beside what a user would write by hand and beside
the raw limit of the same work.

On PostgreSQL and Redis, with a table of 1,000,000 orders of which every
fifth (200,000) is paid, each contender queues one message per paid order:

* the scheduler: ``run_scheduler(trigger)`` of a trigger whose ``where`` is
  ``state == 'paid'``, on a ``RedisBroker`` with ``TriggersMiddleware``;
* (a) the hand-written loop: a peewee query over the same rows and
  ``actor.send(order.id)`` per row to a plain actor on the same broker.
  It is timed over a sample (20,000 rows) and its rate extrapolated,
  because the whole loop would take about a minute a run;
* (b) the raw limit: a psycopg2 keyset scan of the primary keys, and per
  page of 1,000 keys one Redis pipeline that takes their in-flight marks
  (one script call) and writes their messages the way the broker stores
  them (one ``HSET`` and one ``RPUSH``), with no ``Message`` objects and
  no middleware in between: the same work in the fewest commands;
* (b') for reference, not a target: the raw scan again, but with the
  pipeline holding a ``SET NX PX`` and a call of the broker's dispatch
  script per row, which is what ``RedisBroker.enqueue`` sends per message.

Each contender runs ``--repeat`` times, interleaved, on an emptied Redis
database; the best time counts.  Then the memory benchmark
(``scheduler_memory.py``) runs the scheduler over 10,000 and 1,000,000
matching rows.  The targets are about ratios, because absolute times on a
shared machine are noise: the scheduler at least 8 times as fast as (a), at
least half as fast as (b), and its peak memory for 1,000,000 rows within
30 MiB of its peak for 10,000.  The exit status is 1 when one is missed.

Usage: ``python bench/scheduler_throughput.py [--quick] [--repeat N]``;
``--quick`` uses a table of 100,000 rows for a smoke run.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import benchlib as lib
import dramatiq
import scheduler_memory
from benchlib import BenchOrder, Setup

from dramatiq_triggers import Trigger
from dramatiq_triggers.enqueue import message_ids
from dramatiq_triggers.scheduler import run_scheduler

SPEEDUP_OVER_LOOP = 8.0
FRACTION_OF_RAW = 0.5


@dataclass
class Timing:
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


# -- the contenders -----------------------------------------------------------


def time_scheduler(setup: Setup, trigger: Trigger) -> Timing:
    with lib.stopwatch() as elapsed:
        sent = run_scheduler(trigger)
    _check_queued(setup, trigger.queue, sent)
    return Timing(sent, elapsed[0])


def declare_plain_actor(setup: Setup) -> dramatiq.Actor:
    def ship_order(order_id: int) -> None:
        BenchOrder.update(state="shipped").where(BenchOrder.id == order_id).execute()

    return dramatiq.actor(ship_order, broker=setup.broker, actor_name="bench_plain_ship",
                          queue_name="bench_plain_ship")


def time_peewee_loop(setup: Setup, actor: dramatiq.Actor, sample: int) -> Timing:
    query = (BenchOrder.select(BenchOrder.id).where(lib.paid())
             .order_by(BenchOrder.id).limit(sample))
    sent = 0
    with lib.database.connection_context(), lib.stopwatch() as elapsed:
        for order in query:
            actor.send(order.id)
            sent += 1
    _check_queued(setup, actor.queue_name, sent)
    return Timing(sent, elapsed[0])


#: The raw limit's in-flight marks: one script call a page, keys built in Lua.
_RAW_MARKS = """
local ttl, prefix = ARGV[1], ARGV[2]
local taken = {}
for i = 3, #ARGV do
  taken[i - 2] = redis.call('SET', prefix .. ARGV[i], '1', 'NX', 'PX', ttl) and 1 or 0
end
return taken
"""


def time_raw(setup: Setup, *, per_message_dispatch: bool = False) -> Timing:
    """psycopg2 keyset pages and one Redis pipeline a page, no Python in between.

    Each page's pipeline takes the in-flight marks of its keys and queues
    one message per key, written as the broker writes it (a hash entry and
    a list push in dramatiq's Redis layout), with two fresh ids a message
    like ``RedisBroker.enqueue`` gives it.  By default the marks are one
    script call and the messages one ``HSET`` and one ``RPUSH`` a page, in
    MULTI/EXEC: the fewest commands, so the lower bound.  With
    ``per_message_dispatch`` the pipeline holds a ``SET NX PX`` and a call
    of the broker's own dispatch script per row instead, which is how
    ``RedisBroker.enqueue`` writes one message.
    """
    broker = setup.broker
    client = setup.client
    queue_name = "bench_raw_ship"
    actor_name = "bench_raw_ship.worker"
    mark_prefix = f"{lib.NAMESPACE}:inflight:{actor_name}:"
    queue_key = f"{lib.NAMESPACE}:{queue_name}"
    heartbeats_key = f"{lib.NAMESPACE}:__heartbeats__"
    ttl = setup.middleware.in_flight_ttl
    marks_sha = client.script_load(_RAW_MARKS)
    dispatch_sha = client.script_load(broker.scripts["dispatch"].script)
    dispatch_fixed = (broker.broker_id, broker.heartbeat_timeout, broker.dead_message_ttl, 0,
                      broker._max_unpack_size())
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    sql = (f"SELECT id FROM {lib.TABLE} WHERE state = 'paid' AND id > %s "
           "ORDER BY id LIMIT %s")

    connection = lib.raw_connection()
    sent = 0
    try:
        with connection.cursor() as cursor, lib.stopwatch() as elapsed:
            last = 0
            while True:
                cursor.execute(sql, (last, lib.PAGE_SIZE))
                keys = [row[0] for row in cursor.fetchall()]
                if not keys:
                    break
                now = int(time.time() * 1000)
                ids = message_ids(2 * len(keys))
                payloads = {}
                for key, redis_message_id, message_id in zip(keys, ids[::2], ids[1::2]):
                    payloads[redis_message_id] = dumps({
                        "queue_name": queue_name, "actor_name": actor_name, "args": [key],
                        "kwargs": {}, "options": {"redis_message_id": redis_message_id},
                        "message_id": message_id, "message_timestamp": now,
                    }).encode()

                if per_message_dispatch:
                    pipeline = client.pipeline(transaction=False)
                    for key, (redis_message_id, payload) in zip(keys, payloads.items()):
                        pipeline.set(mark_prefix + str(key), b"1", nx=True, px=ttl)
                        pipeline.evalsha(dispatch_sha, 1, lib.NAMESPACE, "enqueue", now,
                                         queue_name, *dispatch_fixed, redis_message_id, payload)
                else:
                    pipeline = client.pipeline(transaction=True)
                    pipeline.evalsha(marks_sha, 0, ttl, mark_prefix, *keys)
                    pipeline.zadd(heartbeats_key, {broker.broker_id: now})
                    pipeline.hset(f"{queue_key}.msgs", mapping=payloads)
                    pipeline.rpush(queue_key, *payloads)
                pipeline.execute()

                sent += len(keys)
                if len(keys) < lib.PAGE_SIZE:
                    break
                last = keys[-1]
    finally:
        connection.close()
    _check_queued(setup, queue_name, sent)
    return Timing(sent, elapsed[0])


def _check_queued(setup: Setup, queue_name: str, sent: int) -> None:
    queued = lib.queue_length(setup, queue_name)
    if queued != sent:
        raise SystemExit(f"{sent} messages were sent to {queue_name} but {queued} are queued.")


# -- running and reporting ----------------------------------------------------


def best_of(repeat: int, contenders: dict[str, Callable[[], Timing]],
            setup: Setup) -> dict[str, Timing]:
    """Run every contender ``repeat`` times, interleaved; keep each one's best."""
    best: dict[str, Timing] = {}
    for round_number in range(1, repeat + 1):
        for label, contender in contenders.items():
            lib.flush(setup.client)
            gc.collect()
            timing = contender()
            print(f"  round {round_number}: {label:<10} {timing.rows:>9,} rows "
                  f"in {timing.seconds:6.2f} s ({timing.rate:>9,.0f} rows/s)", flush=True)
            if label not in best or timing.seconds < best[label].seconds:
                best[label] = timing
    lib.flush(setup.client)
    return best


def describe_services(setup: Setup) -> str:
    connection = lib.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            postgres = cursor.fetchone()[0].split()[0]
    finally:
        connection.close()
    redis_version = setup.client.info("server")["redis_version"]
    return (f"Python {platform.python_version()}, dramatiq {version('dramatiq')}, "
            f"peewee {version('peewee')}, PostgreSQL {postgres}, Redis {redis_version}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a table of 100,000 rows instead of 1,000,000 (smoke run)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs of each contender; the best counts (default 2, quick 1)")
    parser.add_argument("--sample", type=int, default=None,
                        help="rows the hand-written loop is timed over (default 20,000)")
    parser.add_argument("--skip-memory", action="store_true",
                        help="leave out the memory target")
    parser.add_argument("--rebuild", action="store_true",
                        help="recreate bench_orders even when it has the right size")
    arguments = parser.parse_args()

    rows = 100_000 if arguments.quick else 1_000_000
    repeat = arguments.repeat or (1 if arguments.quick else 2)
    matching = lib.matching_rows(rows)
    sample = min(arguments.sample or (5_000 if arguments.quick else 20_000), matching)

    built = lib.prepare_table(rows, rebuild=arguments.rebuild)
    setup = lib.make_setup()
    print(describe_services(setup))
    print(f"{lib.TABLE}: {rows:,} rows, {matching:,} paid"
          + (f" (built in {built:.1f} s)" if built else " (reused)"))

    trigger = lib.declare_trigger(lib.paid)
    actor = declare_plain_actor(setup)
    contenders = {
        SCHEDULER: lambda: time_scheduler(setup, trigger),
        LOOP: lambda: time_peewee_loop(setup, actor, sample),
        RAW: lambda: time_raw(setup),
        RAW_DISPATCH: lambda: time_raw(setup, per_message_dispatch=True),
    }
    print(f"Throughput, best of {repeat}:")
    best = best_of(repeat, contenders, setup)

    memory = None
    if not arguments.skip_memory:
        few, many = scheduler_memory.sizes(arguments.quick)
        print(f"Memory: the scheduler over {few:,} then {many:,} matching rows, "
              "each in a fresh process ...", flush=True)
        memory = (scheduler_memory.measure(few), scheduler_memory.measure(many))

    print()
    print_timings(best, matching, sample)
    print()
    return print_targets(best, memory)


SCHEDULER, LOOP, RAW, RAW_DISPATCH = "scheduler", "(a) loop", "(b) raw", "(b') raw"
_DESCRIPTIONS = {
    SCHEDULER: "dramatiq_triggers scheduler",
    LOOP: "(a) peewee loop + actor.send, sampled *",
    RAW: "(b) raw: keyset + 1 pipeline/page, batched",
    RAW_DISPATCH: "(b') raw, dispatch script per row (info)",
}


def print_timings(best: dict[str, Timing], matching: int, sample: int) -> None:
    print(f"{'contender':<46}{'rows':>10}{'seconds':>10}{'rows/s':>10}{'vs ours':>9}")
    ours = best[SCHEDULER]
    for label, timing in best.items():
        print(f"{_DESCRIPTIONS[label]:<46}{timing.rows:>10,}{timing.seconds:>10.2f}"
              f"{timing.rate:>10,.0f}{timing.rate / ours.rate:>8.2f}x")
    loop = best[LOOP]
    print(f"* (a) ran over {sample:,} of the {matching:,} paid rows; at its rate all of "
          f"them would take {matching / loop.rate:,.0f} s.")


def print_targets(best: dict[str, Timing],
                  memory: tuple[scheduler_memory.MemoryReading, ...] | None) -> int:
    ours = best[SCHEDULER].rate
    speedup = ours / best[LOOP].rate
    fraction = ours / best[RAW].rate
    results = [
        ("scheduler speed / (a) loop speed", f"{speedup:.1f}x", f">= {SPEEDUP_OVER_LOOP:g}x",
         speedup >= SPEEDUP_OVER_LOOP),
        ("scheduler speed / (b) raw speed", f"{fraction:.2f}", f">= {FRACTION_OF_RAW:g}",
         fraction >= FRACTION_OF_RAW),
    ]
    if memory is not None:
        small, large = memory
        growth = large.rss_growth_kib - small.rss_growth_kib
        results.append((f"peak RSS, {large.matching:,} minus {small.matching:,} rows",
                        f"{growth / 1024:+.1f} MiB", "<= 30 MiB",
                        growth <= scheduler_memory.ALLOWED_GROWTH_KIB))

    print(f"{'target':<46}{'measured':>12}{'needed':>12}  result")
    for name, measured, needed, passed in results:
        print(f"{name:<46}{measured:>12}{needed:>12}  {'PASS' if passed else 'FAIL'}")
    if memory is not None:
        print("  peak RSS above the RSS before the run: "
              + ", ".join(f"{reading.matching:,} rows +{reading.rss_growth_kib / 1024:.1f} MiB"
                          f" ({reading.seconds:.1f} s)" for reading in memory))
    return 0 if all(passed for *_, passed in results) else 1


if __name__ == "__main__":
    sys.exit(main())
