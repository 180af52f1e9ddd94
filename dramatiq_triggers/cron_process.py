"""Run only the cron, in a process of its own.

``dramatiq-triggers-cron myapp.tasks`` imports the modules that declare the
broker and the triggers, then runs the cron until SIGINT or SIGTERM.  Start
the workers with ``TriggersMiddleware(run_cron=False)`` in that deployment,
or keep it on: tick claims make extra cron processes harmless.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import threading
from collections.abc import Sequence

import dramatiq

from .middleware import middleware_of


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dramatiq-triggers-cron",
        description="Run the cron of every declared trigger and scheduled action.",
    )
    parser.add_argument("modules", nargs="+", help="modules that declare the broker and triggers")
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG")
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if options.verbose else logging.INFO,
        format="[%(asctime)s] [PID %(process)d] [%(name)s] [%(levelname)s] %(message)s",
    )

    for module in options.modules:
        importlib.import_module(module)
    broker = dramatiq.get_broker()
    try:
        middleware = middleware_of(broker)
    except RuntimeError as error:
        parser.error(f"{error} The modules {', '.join(options.modules)} set up a "
                     f"{type(broker).__name__} without it.")
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    middleware.start_cron()
    try:
        stopping.wait()
    finally:
        middleware.stop_cron()
        broker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
