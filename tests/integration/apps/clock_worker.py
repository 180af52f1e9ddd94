"""The clock app for ``dramatiq tests.integration.apps.clock_worker`` and
``python -m dramatiq_triggers.cron_process tests.integration.apps.clock_worker``,
built from the environment (see ``settings.Settings.from_env``)."""

from __future__ import annotations

from .clock import build
from .settings import Settings

clock = build(Settings.from_env())
broker = clock.broker
