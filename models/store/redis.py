"""Async storage used by the API: networks and the worker registry. Key names come from models.keys."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from models.store.keys import Keys
from models.store.usage import put_within_quota


class Store:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    # --- networks ---
    async def put_network(self, *, tenant: str, network_id: str, doc: dict[str, Any], ttl_s: int, quota: int) -> None:
        """Store a network within the tenant's storage quota (else 413)."""
        key = self.keys.network(tenant, network_id)
        text = json.dumps(doc)
        await put_within_quota(
            self.redis,
            self.keys,
            tenant=tenant,
            kind="networks",
            key=key,
            value=text,
            ttl_s=ttl_s,
            quota=quota,
            what="the network",
        )

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
