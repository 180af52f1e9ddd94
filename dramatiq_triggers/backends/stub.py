"""An in-memory backend for tests and single-process use."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from .base import Backend


class StubBackend(Backend):
    """Keeps marks and claims in this process's memory.

    It is the default beside a ``StubBroker``.  Its state is not shared
    with other processes, so it suits tests and the embedded example, not
    a deployment with several worker processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: dict[tuple[str, str], float] = {}
        self._owners: dict[tuple[str, str], str] = {}
        self._done: dict[str, set[str]] = {}
        self._ticks: dict[tuple[str, str], float] = {}

    def _alive(self, table: dict[tuple[str, str], float], name: tuple[str, str]) -> bool:
        expires = table.get(name)
        if expires is None:
            return False
        if expires <= time.monotonic():
            del table[name]
            return False
        return True

    def claim(
        self,
        key: str,
        items: Sequence[str],
        *,
        ttl: int,
        done: Sequence[str] | None = None,
        owners: Sequence[str] | None = None,
    ) -> list[bool]:
        expires = time.monotonic() + ttl / 1000
        claimed = []
        with self._lock:
            done_set = self._done.get(key, set())
            for index, item in enumerate(items):
                finished = done is not None and done[index] in done_set
                if finished or self._alive(self._marks, (key, item)):
                    claimed.append(False)
                else:
                    self._marks[(key, item)] = expires
                    self._owners[(key, item)] = owners[index] if owners is not None else ""
                    claimed.append(True)
        return claimed

    def release(self, key: str, items: Sequence[str], owners: Sequence[str] | None = None) -> None:
        with self._lock:
            for index, item in enumerate(items):
                if owners is None or self._owners.get((key, item)) == owners[index]:
                    self._marks.pop((key, item), None)
                    self._owners.pop((key, item), None)

    def touch(self, key: str, item: str, owner: str, *, ttl: int) -> None:
        with self._lock:
            if self._alive(self._marks, (key, item)) and self._owners.get((key, item)) == owner:
                self._marks[(key, item)] = time.monotonic() + ttl / 1000

    def in_flight(self, key: str, item: str) -> bool:
        with self._lock:
            return self._alive(self._marks, (key, item))

    def mark_done(self, key: str, item: str) -> None:
        with self._lock:
            self._done.setdefault(key, set()).add(item)

    def is_done(self, key: str, item: str) -> bool:
        with self._lock:
            return item in self._done.get(key, set())

    def claim_tick(self, job_id: str, tick: str, *, ttl: int) -> bool:
        with self._lock:
            if self._alive(self._ticks, (job_id, tick)):
                return False
            self._ticks[(job_id, tick)] = time.monotonic() + ttl / 1000
            return True

    def clear(self) -> None:
        """Forget every mark and claim (between tests)."""
        with self._lock:
            self._marks.clear()
            self._owners.clear()
            self._done.clear()
            self._ticks.clear()
