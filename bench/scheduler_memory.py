"""Scheduler memory: the peak memory of one scheduler run must not grow with
the number of matching rows.

Each measurement runs in a fresh Python process, so one run's garbage and
the allocator's high-water mark cannot leak into the next.  The process
declares a trigger whose ``where`` matches the first N rows of
``bench_orders`` (``id <= N``), warms up (imports, Lua scripts, a first
page), then runs the scheduler once and reports how far its resident set
rose above where it stood just before the run (``ru_maxrss`` minus the RSS
before).  With ``--tracemalloc`` it reports the Python heap's peak as well;
that slows the run down about threefold.

Run it alone with ``python bench/scheduler_memory.py [--quick]``; the
throughput benchmark (``scheduler_throughput.py``) runs it too.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: The run with many rows may peak at most this much above the run with few.
ALLOWED_GROWTH_KIB = 30 * 1024


@dataclass
class MemoryReading:
    matching: int
    sent: int
    seconds: float
    rss_growth_kib: int
    python_peak_kib: int | None


def measure(matching: int, *, use_tracemalloc: bool = False) -> MemoryReading:
    """Run the scheduler over ``matching`` rows in a child process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(matching)]
    if use_tracemalloc:
        command.append("--tracemalloc")
    finished = subprocess.run(command, check=True, capture_output=True, text=True)
    return MemoryReading(**json.loads(finished.stdout.strip().splitlines()[-1]))


def _child(matching: int, use_tracemalloc: bool) -> None:
    import benchlib as lib
    from benchlib import BenchOrder

    from dramatiq_triggers.scheduler import run_scheduler

    setup = lib.make_setup()
    warm_up = lib.declare_trigger(lambda: BenchOrder.id <= 2 * lib.PAGE_SIZE, name="warm_up")
    measured = lib.declare_trigger(lambda: BenchOrder.id <= matching, name="measured")
    run_scheduler(warm_up)
    lib.flush(setup.client)
    gc.collect()

    if use_tracemalloc:
        import tracemalloc

        tracemalloc.start()
    before = lib.current_rss_kib()
    started = time.perf_counter()
    sent = run_scheduler(measured)
    seconds = time.perf_counter() - started
    growth = lib.peak_rss_kib() - before
    python_peak = None
    if use_tracemalloc:
        python_peak = tracemalloc.get_traced_memory()[1] // 1024
        tracemalloc.stop()

    queued = lib.queue_length(setup, measured.queue)
    lib.flush(setup.client)
    if sent != matching or queued != matching:
        raise SystemExit(f"expected {matching} messages, the scheduler sent {sent} and "
                         f"{queued} are queued")
    print(json.dumps({"matching": matching, "sent": sent, "seconds": seconds,
                      "rss_growth_kib": growth, "python_peak_kib": python_peak}))


def sizes(quick: bool) -> tuple[int, int]:
    """The few and the many matching rows compared: 10,000 and the whole table."""
    return (10_000, 100_000) if quick else (10_000, 1_000_000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="compare 10,000 with 100,000 rows instead of 1,000,000")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also report the Python heap's peak (slower)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child is not None:
        _child(arguments.child, arguments.tracemalloc)
        return 0

    import benchlib as lib

    few, many = sizes(arguments.quick)
    lib.prepare_table(many)
    small = measure(few, use_tracemalloc=arguments.tracemalloc)
    large = measure(many, use_tracemalloc=arguments.tracemalloc)
    growth = large.rss_growth_kib - small.rss_growth_kib
    for reading in (small, large):
        heap = ("" if reading.python_peak_kib is None
                else f", Python heap peak {reading.python_peak_kib / 1024:.1f} MiB")
        print(f"{reading.matching:>9,} rows: peak RSS +{reading.rss_growth_kib / 1024:.1f} MiB"
              f"{heap} ({reading.seconds:.1f} s)")
    passed = growth <= ALLOWED_GROWTH_KIB
    print(f"difference: {growth / 1024:+.1f} MiB (allowed 30 MiB): "
          f"{'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
