"""Deleting objects whose Redis record is gone: what a job's or dataset's TTL expiry leaves in the artifact store
(Redis expires the records; nothing tells the store), and what a delete during a store outage, or a worker killed
between writing a checkpoint and recording it, left behind.

Redis is the source of truth: an object is kept while a record names it (a checkpoint index entry, the resume
record, an export's record, a dataset's ``ref``). Objects younger than ``grace_s`` are left alone, since their
record may be written a moment after them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import redis

from models.store.artifacts import Artifacts, Listed
from models.store.keys import JobPart, Keys


def sweep_once(client: redis.Redis, keys: Keys, artifacts: Artifacts, *, grace_s: float) -> list[str]:
    """One pass over the whole store; returns the keys it deleted."""
    now = datetime.now(UTC)
    groups: dict[tuple[str, str, str], list[Listed]] = {}
    for item in artifacts.list(""):
        parts = item.key.split("/")
        if len(parts) >= 4 and (now - item.modified).total_seconds() >= grace_s:
            groups.setdefault((parts[0], parts[1], parts[2]), []).append(item)
    gone: list[str] = []
    for (tenant, kind, ident), items in groups.items():
        named = _named(client, keys, tenant, kind, ident)
        gone += [item.key for item in items if named is not None and item.key not in named]
    for key in gone:
        artifacts.delete(key)
    return gone


def _named(client: redis.Redis, keys: Keys, tenant: str, kind: str, ident: str) -> set[str] | None:
    """The object keys the records of one job or dataset name (empty when the records are gone), or None
    for a folder this service does not write."""
    if kind == "datasets":
        ref = client.hget(keys.dataset(tenant, ident), "ref")
        return set() if ref is None else {json.loads(ref)["key"]}
    if kind != "jobs":
        return None
    if not client.exists(keys.job(tenant, ident)):
        return set()
    pipe = client.pipeline(transaction=False)
    pipe.hvals(keys.job_part(tenant, ident, JobPart.CHECKPOINT_INDEX))
    pipe.hvals(keys.job_part(tenant, ident, JobPart.EXPORTS))
    pipe.get(keys.job_part(tenant, ident, JobPart.RESUME))
    index, exports, resume = pipe.execute()
    records = [*index, *exports, *([resume] if resume is not None else [])]
    return {json.loads(r)["key"] for r in records}
