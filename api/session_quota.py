"""A tenant's sessions against its quotas: how many (``GRADSERVE_MAX_SESSIONS``) and their state's bytes
(``GRADSERVE_TENANT_STORAGE_BYTES``, with networks, datasets and jobs), checked and taken in one Lua
script so concurrent creates cannot overshoot either.

The tenant's index (``Keys.sessions_index``) scores each session id by when it was admitted. Sessions
expire on their own (their TTL), so the script first drops ids whose session is gone, but only once
they are older than a create may take, so a session still being built on a worker keeps its place.

A session books the most its state in Redis holds (``state_bound``) in the ``sessions`` usage ledger,
under its own key. The key must exist from admission on (a ledger drops members whose key is gone), so
admission writes it with a ``booked`` field only and a short TTL; the worker's create fills it in and
gives it the session's TTL. Deleting or expiring the session frees its bytes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from models.errors import TooManyRequests
from models.settings import Settings
from models.store.keys import Keys
from models.store.usage import KINDS, LEDGER_LUA, ledgers, over_quota

# Elements kept per parameter element: the weights, their grads, two optimizer moments (Adam's) and the
# weights the last forward used (kept once a step changes them), at four bytes each.
_COPIES = 5
_ELEMENT_BYTES = 4
_OVERHEAD_BYTES = 64 * 1024  # buffers, RNG states, meta and a small forward record

# KEYS: the sessions index, the usage ledgers, the session. ARGV: session id, max sessions, session key
# prefix, grace, index ttl, bytes to book, storage quota. Returns {1, 0}, {0, count} or {2, bytes used}.
ADMIT = (
    LEDGER_LUA
    + """
local now = tonumber(redis.call('time')[1])
local items = redis.call('zrange', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #items, 2 do
  if now - tonumber(items[i + 1]) > tonumber(ARGV[4]) and redis.call('exists', ARGV[3] .. items[i]) == 0 then
    redis.call('zrem', KEYS[1], items[i])
  end
end
if redis.call('zscore', KEYS[1], ARGV[1]) then return {1, 0} end
local count = redis.call('zcard', KEYS[1])
if count >= tonumber(ARGV[2]) then return {0, count} end
local used = ledger_bytes(2, #KEYS - 1)
if used + tonumber(ARGV[6]) > tonumber(ARGV[7]) then return {2, used} end
redis.call('zadd', KEYS[1], now, ARGV[1])
redis.call('expire', KEYS[1], ARGV[5])
local session = KEYS[#KEYS]
if redis.call('hexists', session, 'version') == 0 then
  redis.call('hset', session, 'booked', ARGV[6])
  redis.call('expire', session, ARGV[4])
end
local ledger = KEYS[#KEYS - 1]
redis.call('zadd', ledger, ARGV[6], session)
if redis.call('ttl', ledger) < tonumber(ARGV[5]) then redis.call('expire', ledger, ARGV[5]) end
return {1, 0}
"""
)
# A create that failed before the worker built the session: its placeholder goes, and its place.
FORGET_PLACEHOLDER = (
    "if redis.call('hexists', KEYS[1], 'version') == 0 then return redis.call('del', KEYS[1]) end return 0"
)
assert KINDS[-1] == "sessions"  # ADMIT books into the last ledger


def state_bound(num_elements: int) -> int:
    """The most bytes a session of a network with ``num_elements`` parameter elements keeps in Redis."""
    return _COPIES * _ELEMENT_BYTES * num_elements + _OVERHEAD_BYTES


async def admit(redis: Redis, keys: Keys, settings: Settings, tenant: str, sid: str, state_bytes: int) -> None:
    """Count the session against its tenant's quotas, or refuse it: 429 past the count, 413 past the bytes."""
    grace_s = int(settings.call_timeout_s) + 60
    args = (sid, settings.max_sessions, keys.session(tenant, ""), grace_s, settings.session_ttl_s + grace_s)
    script_keys = [keys.sessions_index(tenant), *ledgers(keys, tenant), keys.session(tenant, sid)]
    code, got = await redis.eval(
        ADMIT, len(script_keys), *script_keys, *args, state_bytes, settings.tenant_storage_bytes
    )
    if code == 0:
        raise TooManyRequests(
            f"tenant already holds {settings.max_sessions} sessions (GRADSERVE_MAX_SESSIONS); "
            "delete one (DELETE /v1/sessions/{id}) or let an idle one expire"
        )
    if code == 2:
        raise over_quota(
            used=int(got), adding=state_bytes, quota=settings.tenant_storage_bytes, what="the session's state"
        )


async def release(redis: Redis, keys: Keys, tenant: str, sid: str) -> None:
    await redis.zrem(keys.sessions_index(tenant), sid)


async def forget_unbuilt(redis: Redis, keys: Keys, tenant: str, sid: str) -> bool:
    """After a failed create: drop the session's placeholder and its place unless a worker built it;
    whether it was built."""
    if await redis.eval(FORGET_PLACEHOLDER, 1, keys.session(tenant, sid)):
        await release(redis, keys, tenant, sid)
        return False
    return bool(await redis.hexists(keys.session(tenant, sid), "version"))
