"""Async storage used by the API: networks and the worker registry. Key names come from models.keys."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from models.store.keys import Keys


class Store:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # --- networks ---
    async def put_network(self, *, tenant: str, network_id: str, doc: dict[str, Any], ttl_s: int) -> None:
        await self.redis.set(self.keys.network(tenant, network_id), json.dumps(doc), ex=ttl_s)

    async def get_network(self, *, tenant: str, network_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.network(tenant, network_id))
        return None if raw is None else json.loads(raw)

    # --- workers ---
    async def live_workers(self) -> list[dict[str, Any]]:
        """Workers whose heartbeat has not expired, each as it described itself."""
        names = [k async for k in self.redis.scan_iter(match=self.keys.worker_pattern(), count=200)]
        if not names:
            return []
        now = time.time()
        docs = [json.loads(raw) for raw in await self.redis.mget(names) if raw is not None]
        for doc in docs:
            doc["last_seen_s"] = round(now - doc.get("beat_at", now), 3)
        return sorted(docs, key=lambda d: d.get("name", ""))
