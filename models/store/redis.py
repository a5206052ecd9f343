"""Async storage used by the API: networks and the worker registry. Key names come from models.store.keys."""

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

    async def put_exported_network(
        self, *, tenant: str, network_id: str, doc: dict[str, Any], blobs: dict[str, bytes], ttl_s: int, quota: int
    ) -> None:
        """Store an exported network's programs and weights, then its document, within the tenant's quota."""
        await put_within_quota(
            self.redis,
            self.keys,
            tenant=tenant,
            kind="networks",
            key=self.keys.network_blobs(tenant, network_id),
            value=blobs,
            ttl_s=ttl_s,
            quota=quota,
            what="the network's programs and weights",
        )
        await self.put_network(tenant=tenant, network_id=network_id, doc=doc, ttl_s=ttl_s, quota=quota)

    async def network_blobs(self, *, tenant: str, network_id: str, fields: list[str]) -> list[bytes | None]:
        got = await self.redis.hmget(self.keys.network_blobs(tenant, network_id), fields)
        return [None if v is None else v if isinstance(v, bytes) else v.encode() for v in got]

    async def get_network(self, *, tenant: str, network_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.keys.network(tenant, network_id))
        return None if raw is None else json.loads(raw)

    async def list_networks(self, *, tenant: str) -> list[dict[str, Any]]:
        names = [self.keys.network(tenant, i) for i in await self.ids(tenant=tenant, kind="net")]
        return [json.loads(raw) for raw in (await self.redis.mget(names) if names else []) if raw is not None]

    async def delete_network(self, *, tenant: str, network_id: str) -> bool:
        """Jobs keep the spec they ran, so deleting a network never breaks one."""
        deleted = await self.redis.delete(self.keys.network(tenant, network_id))
        await self.redis.delete(self.keys.network_blobs(tenant, network_id))
        return bool(deleted)

    # --- listing ---
    async def ids(self, *, tenant: str, kind: str) -> list[str]:
        """Ids of the tenant's objects of one kind ("net", "sess", "data"), found by SCAN: no index to keep
        in step with expiry. Satellite keys (``sess:<id>:lock``) are skipped."""
        pattern = self.keys.pattern(tenant, kind)
        base = len(pattern) - 1
        found = set()
        async for key in self.redis.scan_iter(match=pattern, count=1000):
            rest = key.decode()[base:]
            if ":" not in rest:
                found.add(rest)
        return sorted(found)

    async def hash_fields(self, names: list[str], *fields: str) -> list[list[bytes | None]]:
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hmget(name, fields)
        return list(await pipe.execute()) if names else []

    # --- workers ---
    async def sweeper(self) -> dict[str, Any] | None:
        """The leading sweeper ({host, pid}), or None when none leads (none runs, or its lease lapsed)."""
        raw = await self.redis.get(self.keys.sweeper_leader())
        if raw is None:
            return None
        doc = json.loads(raw)
        return {"host": doc["host"], "pid": doc["pid"]}

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
