"""Coordination backends: where in-flight marks, done marks and cron tick
claims live, shared by every process and host of a deployment."""

from __future__ import annotations

from .base import Backend
from .redis import RedisBackend
from .stub import StubBackend

__all__ = ["Backend", "RedisBackend", "StubBackend"]
