"""What each tenant stores, and the per-tenant storage quota checked before anything is written.

One sorted set per kind of object (``Keys.usage``): members are the objects' own Redis keys, scores
their bytes (for a job, the bound on everything it may write: data, checkpoints, captures, records; for a
session, the bound on the state it keeps: see ``api.session_quota``).
An object that expired or was deleted is dropped from its ledger the next time the ledger is summed,
so the ledgers need no cleanup of their own. Summing and writing happen in one Lua script, so two
uploads at once cannot both slip under the quota.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from models.errors import PayloadTooLarge
from models.store.keys import Keys

KINDS = ("networks", "datasets", "jobs", "sessions")

# Lua: the bytes the ledgers KEYS[first..last] hold, pruning members whose object is gone.
LEDGER_LUA = """
local function ledger_bytes(first, last)
  local used = 0
  for i = first, last do
    local rows = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')
    for j = 1, #rows, 2 do
      if redis.call('EXISTS', rows[j]) == 1 then used = used + tonumber(rows[j + 1])
      else redis.call('ZREM', KEYS[i], rows[j]) end
    end
  end
  return used
end
"""

# KEYS: the ledgers (in KINDS order), then the object. ARGV: kind index, bytes, quota, ttl, 'set' or
# 'hset', then the value (set) or field/value pairs (hset).
_PUT = (
    LEDGER_LUA
    + """
local used = ledger_bytes(1, #KEYS - 1)
if used + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return {0, used} end
local target = KEYS[#KEYS]
if ARGV[5] == 'set' then
  redis.call('SET', target, ARGV[6], 'EX', ARGV[4])
else
  redis.call('HSET', target, unpack(ARGV, 6, #ARGV))
  redis.call('EXPIRE', target, ARGV[4])
end
local ledger = KEYS[tonumber(ARGV[1])]
redis.call('ZADD', ledger, ARGV[2], target)
if redis.call('TTL', ledger) < tonumber(ARGV[4]) then redis.call('EXPIRE', ledger, ARGV[4]) end
return {1, used}
"""
)

# Counts and bytes per ledger, pruning as above.
_SUMMARY = (
    LEDGER_LUA
    + """
local out = {}
for i = 1, #KEYS do
  local bytes = ledger_bytes(i, i)
  out[#out + 1] = redis.call('ZCARD', KEYS[i])
  out[#out + 1] = bytes
end
return out
"""
)


def ledgers(keys: Keys, tenant: str) -> list[str]:
    return [keys.usage(tenant, kind) for kind in KINDS]


def over_quota(*, used: int, adding: int, quota: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} needs {adding:,} bytes, but the tenant already stores {used:,} of its {quota:,} "
        "(GRADSERVE_TENANT_STORAGE_BYTES); delete datasets or sessions you no longer need "
        "(DELETE /v1/datasets/{id}, DELETE /v1/sessions/{id}) or wait for old jobs to expire; "
        "GET /v1/usage shows what is stored"
    )


async def put_within_quota(
    redis: Redis,
    keys: Keys,
    *,
    tenant: str,
    kind: str,
    key: str,
    value: bytes | str | dict[str, Any],
    ttl_s: int,
    quota: int,
    what: str,
    size: int | None = None,
) -> None:
    """Write ``value`` under ``key`` (a string, or a hash from a dict) and book its bytes, or raise 413.

    ``size``: bytes stored beside the record (an artifact it names), booked on top of the record's own."""
    if isinstance(value, dict):
        flat: list[Any] = [part for pair in value.items() for part in pair]
        booked = sum(len(v) if isinstance(v, bytes | str) else 8 for v in value.values())
        mode = "hset"
    else:
        flat, booked, mode = [value], len(value), "set"
    size = booked + (size or 0)
    script = redis.register_script(_PUT)
    ok, used = await script(
        keys=[*ledgers(keys, tenant), key], args=[KINDS.index(kind) + 1, size, quota, ttl_s, mode, *flat]
    )
    if not ok:
        raise over_quota(used=int(used), adding=size, quota=quota, what=what)


async def summary(redis: Redis, keys: Keys, *, tenant: str) -> dict[str, dict[str, int]]:
    """``{kind: {"count", "bytes"}}`` of what the tenant stores now."""
    script = redis.register_script(_SUMMARY)
    flat = await script(keys=ledgers(keys, tenant), args=[])
    return {kind: {"count": int(flat[2 * i]), "bytes": int(flat[2 * i + 1])} for i, kind in enumerate(KINDS)}
