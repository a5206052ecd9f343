"""Async storage of sweeps: the request and status in one hash, one JSON entry per trial in another.
Key names come from models.store.keys; Optuna keeps its own study in the journal under ``optuna_journal``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from gradserve.protocol.states import SWEEP_TERMINAL
from models.store.keys import Keys
from models.store.replies import members, text

# KEYS: the sweep hash. ARGV: the status it must have, the new status, finished_at (or "").
_MOVE = """
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'finished_at', ARGV[3]) end
return 1
"""


class SweepStore:
    def __init__(self, redis: Redis, keys: Keys, ttl_s: int) -> None:
        self.redis, self.keys, self.ttl_s = redis, keys, ttl_s

    async def create(self, *, tenant: str, sweep_id: str, name: str | None, request: str) -> None:
        now = time.time()
        key = self.keys.sweep(tenant, sweep_id)
        fields: dict[Any, Any] = {"id": sweep_id, "status": "running", "created_at": now, "request": request}
        if name:
            fields["name"] = name
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.ttl_s)
        pipe.zadd(self.keys.sweep_index(tenant), {sweep_id: now})
        pipe.expire(self.keys.sweep_index(tenant), self.ttl_s)
        pipe.sadd(self.keys.sweeps_active(), f"{tenant}/{sweep_id}")
        await pipe.execute()

    async def get(self, *, tenant: str, sweep_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.sweep(tenant, sweep_id))
        if not raw:
            return None
        doc: dict[str, Any] = {text(k): text(v) for k, v in raw.items()}
        doc["created_at"] = float(doc["created_at"])
        doc["finished_at"] = float(doc["finished_at"]) if "finished_at" in doc else None
        doc["request"] = json.loads(doc["request"])
        doc["importances"] = json.loads(doc["importances"]) if "importances" in doc else None
        doc.setdefault("name", None)
        return doc

    async def update(self, *, tenant: str, sweep_id: str, **fields: Any) -> None:
        flat: dict[Any, Any] = {k: v if isinstance(v, (str, int, float)) else json.dumps(v) for k, v in fields.items()}
        await self.redis.hset(self.keys.sweep(tenant, sweep_id), mapping=flat)

    async def set_status(self, *, tenant: str, sweep_id: str, status: str, only_from: str) -> bool:
        """Move the sweep from ``only_from`` to ``status`` (atomically: a cancel and the controller's finish
        may race); a final status also sets ``finished_at``. Whether it moved."""
        script = self.redis.register_script(_MOVE)
        finished = time.time() if status in SWEEP_TERMINAL else ""
        return bool(await script(keys=[self.keys.sweep(tenant, sweep_id)], args=[only_from, status, finished]))

    async def ids(self, *, tenant: str) -> list[str]:
        return members(await self.redis.zrevrange(self.keys.sweep_index(tenant), 0, -1))

    async def finish(self, *, tenant: str, sweep_id: str) -> None:
        """No more driving: the sweep leaves the active set."""
        await self.redis.srem(self.keys.sweeps_active(), f"{tenant}/{sweep_id}")

    async def active(self, *, tenant: str, sweep_id: str) -> bool:
        """Whether the sweep is still driven: running, or cancelled with trials still stopping."""
        return bool(await self.redis.sismember(self.keys.sweeps_active(), f"{tenant}/{sweep_id}"))

    async def delete(self, *, tenant: str, sweep_id: str) -> bool:
        """Forget the sweep and its trial list (the trials' jobs stay). Whether it existed."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.sweep(tenant, sweep_id), self.keys.sweep_trials(tenant, sweep_id))
        pipe.zrem(self.keys.sweep_index(tenant), sweep_id)
        deleted, _ = await pipe.execute()
        return bool(deleted)

    # --- trials ---
    async def trials(self, *, tenant: str, sweep_id: str) -> list[dict[str, Any]]:
        return (await self.trials_of(tenant=tenant, sweep_ids=[sweep_id]))[0]

    async def trials_of(self, *, tenant: str, sweep_ids: list[str]) -> list[list[dict[str, Any]]]:
        """Each sweep's trials in number order, read in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for sweep_id in sweep_ids:
            pipe.hgetall(self.keys.sweep_trials(tenant, sweep_id))
        replies = await pipe.execute() if sweep_ids else []
        return [sorted((json.loads(v) for v in raw.values()), key=lambda t: t["number"]) for raw in replies]

    async def put_trial(self, *, tenant: str, sweep_id: str, trial: dict[str, Any]) -> None:
        key = self.keys.sweep_trials(tenant, sweep_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, str(trial["number"]), json.dumps(trial))
        pipe.expire(key, self.ttl_s)
        await pipe.execute()


def best_trial(trials: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    done = [t for t in trials if t["state"] == "complete" and t.get("value") is not None]
    if not done:
        return None
    pick = max if direction == "maximize" else min
    return pick(done, key=lambda t: t["value"])
