"""The shop app for ``dramatiq tests.integration.apps.shop_worker``, built
from the environment (see ``settings.Settings.from_env``)."""

from __future__ import annotations

from .settings import Settings
from .shop import build

shop = build(Settings.from_env())
broker = shop.broker
