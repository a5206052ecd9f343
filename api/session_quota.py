"""The sessions-per-tenant quota, checked and taken in one Lua script so concurrent creates cannot overshoot it.

The tenant's index (``Keys.sessions_index``) scores each session id by when it was admitted. Sessions
expire on their own (their TTL), so the script first drops ids whose session is gone, but only once
they are older than a create may take, so a session still being built on a worker keeps its place.
"""

from __future__ import annotations

from redis.asyncio import Redis

from models.errors import TooManyRequests
from models.settings import Settings
from models.store.keys import Keys

ADMIT = """
local now = tonumber(redis.call('time')[1])
local items = redis.call('zrange', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #items, 2 do
  if now - tonumber(items[i + 1]) > tonumber(ARGV[4]) and redis.call('exists', ARGV[3] .. items[i]) == 0 then
    redis.call('zrem', KEYS[1], items[i])
  end
end
if redis.call('zscore', KEYS[1], ARGV[1]) then return 1 end
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('zadd', KEYS[1], now, ARGV[1])
redis.call('expire', KEYS[1], ARGV[5])
return 1
"""


async def admit(redis: Redis, keys: Keys, settings: Settings, tenant: str, sid: str) -> None:
    """Count the session against its tenant's quota, or refuse it with a 429."""
    grace_s = int(settings.call_timeout_s) + 60
    args = (sid, settings.max_sessions, keys.session(tenant, ""), grace_s, settings.session_ttl_s + grace_s)
    if not await redis.eval(ADMIT, 1, keys.sessions_index(tenant), *args):
        raise TooManyRequests(
            f"tenant already holds {settings.max_sessions} sessions (GRADSERVE_MAX_SESSIONS); "
            "delete one (DELETE /v1/sessions/{id}) or let an idle one expire"
        )


async def release(redis: Redis, keys: Keys, tenant: str, sid: str) -> None:
    await redis.zrem(keys.sessions_index(tenant), sid)
