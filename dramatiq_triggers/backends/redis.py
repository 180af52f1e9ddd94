"""The Redis backend: marks and claims shared by every process and host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from .base import Backend

# Takes every in-flight mark of a page in one round trip.  ARGV[1] is the
# time to live, ARGV[2] the prefix of the mark keys, ARGV[3] the done set
# ("" when trigger_once is off), ARGV[4] the number of items, then the
# items, then (with a done set) the done member of each item, then (when
# ARGV[5] is "1") the owner of each item, stored as the mark's value.  The
# mark keys are built here rather than passed as KEYS: a page of a thousand
# full key names is most of the cost of a claim.
_CLAIM = """
local ttl, prefix, done_key = ARGV[1], ARGV[2], ARGV[3]
local count, has_owners = tonumber(ARGV[4]), ARGV[5] == '1'
local first = 6
local done_at = first + count
local owners_at = done_at
if done_key ~= '' then
  owners_at = done_at + count
end
local claimed = {}
for i = 1, count do
  local ok = 0
  if done_key == '' or redis.call('SISMEMBER', done_key, ARGV[done_at + i - 1]) == 0 then
    local owner = '1'
    if has_owners then
      owner = ARGV[owners_at + i - 1]
    end
    if redis.call('SET', prefix .. ARGV[first + i - 1], owner, 'NX', 'PX', ttl) then
      ok = 1
    end
  end
  claimed[i] = ok
end
return claimed
"""

# Removes the marks still held by their owners: ARGV[1] is the prefix, then
# item and owner pairs.
_RELEASE = """
for i = 2, #ARGV, 2 do
  local mark = ARGV[1] .. ARGV[i]
  if redis.call('GET', mark) == ARGV[i + 1] then
    redis.call('DEL', mark)
  end
end
"""

# Extends a mark's life if its owner still holds it.
_TOUCH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
"""


class RedisBackend(Backend):
    """Keeps marks and claims in Redis.

    Parameters:
      client: a ``redis.Redis`` client; by default the one of the
        ``RedisBroker`` the middleware is added to.
      url: a Redis URL, used when no client is given.
      prefix: the prefix of every key this backend writes.
    """

    def __init__(
        self,
        *,
        client: redis.Redis | None = None,
        url: str | None = None,
        prefix: str = "dramatiq_triggers",
    ) -> None:
        self._owns_client = client is None
        if client is None:
            client = redis.Redis.from_url(url) if url else redis.Redis()
        self.client = client
        self.prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._touch = client.register_script(_TOUCH)

    def _mark(self, key: str, item: str) -> str:
        return f"{self.prefix}:inflight:{key}:{item}"

    def _done(self, key: str) -> str:
        return f"{self.prefix}:done:{key}"

    def claim(
        self,
        key: str,
        items: Sequence[str],
        *,
        ttl: int,
        done: Sequence[str] | None = None,
        owners: Sequence[str] | None = None,
    ) -> list[bool]:
        if not items:
            return []
        args: list[Any] = [int(ttl), self._mark(key, ""), self._done(key) if done else "",
                           len(items), "1" if owners is not None else "0"]
        args.extend(items)
        if done:
            args.extend(done)
        if owners is not None:
            args.extend(owners)
        return [bool(flag) for flag in self._claim(keys=[], args=args)]

    def release(self, key: str, items: Sequence[str], owners: Sequence[str] | None = None) -> None:
        if not items:
            return
        if owners is None:
            self.client.delete(*(self._mark(key, item) for item in items))
            return
        args: list[Any] = [self._mark(key, "")]
        for item, owner in zip(items, owners):
            args.extend((item, owner))
        self._release(keys=[], args=args)

    def touch(self, key: str, item: str, owner: str, *, ttl: int) -> None:
        self._touch(keys=[self._mark(key, item)], args=[owner, int(ttl)])

    def in_flight(self, key: str, item: str) -> bool:
        return bool(self.client.exists(self._mark(key, item)))

    def mark_done(self, key: str, item: str) -> None:
        self.client.sadd(self._done(key), item)

    def is_done(self, key: str, item: str) -> bool:
        return bool(self.client.sismember(self._done(key), item))

    def claim_tick(self, job_id: str, tick: str, *, ttl: int) -> bool:
        name = f"{self.prefix}:tick:{job_id}:{tick}"
        return bool(self.client.set(name, "1", nx=True, px=int(ttl)))

    def close(self) -> None:
        """Close the client this backend made from ``url``; a given one is left open."""
        if self._owns_client:
            self.client.close()
