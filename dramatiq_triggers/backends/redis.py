"""The Redis backend: marks and claims shared by every process and host."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from .base import Backend

# Takes every in-flight mark of a page in one round trip.  ARGV[1] is the
# time to live, ARGV[2] the prefix of the mark keys, ARGV[3] the done set
# ("" when trigger_once is off), then the items, then (with a done set) the
# done member of each item.  The mark keys are built here rather than
# passed as KEYS: a page of a thousand full key names is most of the cost.
_CLAIM = """
local ttl, prefix, done_key = ARGV[1], ARGV[2], ARGV[3]
local count = #ARGV - 3
if done_key ~= '' then
  count = count / 2
end
local claimed = {}
for i = 1, count do
  local ok = 0
  if done_key == '' or redis.call('SISMEMBER', done_key, ARGV[3 + count + i]) == 0 then
    if redis.call('SET', prefix .. ARGV[3 + i], '1', 'NX', 'PX', ttl) then
      ok = 1
    end
  end
  claimed[i] = ok
end
return claimed
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
    ) -> list[bool]:
        if not items:
            return []
        args: list[Any] = [int(ttl), self._mark(key, ""), self._done(key) if done else ""]
        args.extend(items)
        if done:
            args.extend(done)
        return [bool(flag) for flag in self._claim(keys=[], args=args)]

    def release(self, key: str, items: Sequence[str]) -> None:
        if items:
            self.client.delete(*(self._mark(key, item) for item in items))

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
