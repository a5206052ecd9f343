"""Leases: a key that holds one holder's token for a while. The holder renews it as it works; when the
holder dies the lease lapses and another takes over. Used for "one at a time" across processes and hosts:
the sweeper's leadership and each sweep's driver."""

from __future__ import annotations

from redis.asyncio import Redis

from models.store.replies import text

# KEYS: the lease. ARGV: token, ttl (ms). Takes a free lease or renews our own; 0 when another holds it.
_HOLD = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: the lease. ARGV: token. Gives it up only if it is still ours (it may have lapsed and been taken).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leases:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    async def hold(self, key: str, token: str, ttl_s: float) -> bool:
        """Take or renew the lease for ``ttl_s``; False while another token holds it."""
        return bool(await self._hold(keys=[key], args=[token, int(ttl_s * 1000)]))

    async def release(self, key: str, token: str) -> None:
        await self._release(keys=[key], args=[token])

    async def holder(self, key: str) -> str | None:
        raw = await self.redis.get(key)
        return None if raw is None else text(raw)
