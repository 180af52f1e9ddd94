"""The coordination backends side by side: the in-memory one and Redis
behave alike for marks, owners, done marks and tick claims."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from conftest import REDIS_URL, require_service

from dramatiq_triggers import Backend, RedisBackend, StubBackend


@pytest.fixture(params=["stub", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "stub":
        yield StubBackend()
        return
    require_service("redis")
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"dt_test_backends_{uuid.uuid4().hex[:8]}"
    yield RedisBackend(client=client, prefix=prefix)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_a_mark_is_taken_once_until_released(backend: Backend) -> None:
    assert backend.claim("ship", ["1", "2"], ttl=10_000) == [True, True]
    assert backend.claim("ship", ["2", "3"], ttl=10_000) == [False, True]
    backend.release("ship", ["2"])
    assert backend.claim("ship", ["2"], ttl=10_000) == [True]
    assert backend.in_flight("ship", "1")
    assert not backend.in_flight("other", "1")


def test_a_mark_expires_after_its_ttl(backend: Backend) -> None:
    assert backend.claim("ship", ["1"], ttl=100) == [True]
    time.sleep(0.3)
    assert not backend.in_flight("ship", "1")
    assert backend.claim("ship", ["1"], ttl=100) == [True]


def test_only_the_owner_releases_or_extends_a_mark(backend: Backend) -> None:
    assert backend.claim("ship", ["1", "2"], ttl=300, owners=["a", "b"]) == [True, True]

    backend.release("ship", ["1", "2"], ["someone else", "b"])
    assert backend.in_flight("ship", "1")
    assert not backend.in_flight("ship", "2")

    backend.touch("ship", "1", "someone else", ttl=60_000)
    backend.touch("ship", "1", "a", ttl=60_000)
    time.sleep(0.5)
    assert backend.in_flight("ship", "1")


def test_done_items_are_never_claimed(backend: Backend) -> None:
    backend.mark_done("ship", "1")
    assert backend.is_done("ship", "1")
    assert backend.claim("ship", ["1", "2"], ttl=10_000, done=["1", "2"],
                         owners=["a", "b"]) == [False, True]
    assert backend.claim("ship", ["1"], ttl=10_000) == [True]


def test_a_tick_is_claimed_once(backend: Backend) -> None:
    assert backend.claim_tick("job", "2026-12-06T10:00:00+00:00", ttl=60_000)
    assert not backend.claim_tick("job", "2026-12-06T10:00:00+00:00", ttl=60_000)
    assert backend.claim_tick("job", "2026-12-06T10:05:00+00:00", ttl=60_000)
    assert backend.claim_tick("other", "2026-12-06T10:00:00+00:00", ttl=60_000)
