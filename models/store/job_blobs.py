"""A worker's reads of a job's blobs: the state it resumes from, a kept checkpoint, its dataset. Redis holds
each one's record (``ArtifactRef`` JSON), the artifact store the bytes."""

from __future__ import annotations

import json

import redis

from models.data.sources import read_registered
from models.settings import get_settings
from models.store.artifacts import ArtifactRef, Artifacts
from models.store.keys import JobPart, Keys
from models.store.replies import opt_bytes


def resume_state(client: redis.Redis, artifacts: Artifacts, keys: Keys, tenant: str, job_id: str) -> bytes | None:
    """The training state the job resumes from (its last checkpoint, or a fork's start), or None."""
    raw = opt_bytes(client.get(keys.job_part(tenant, job_id, JobPart.RESUME)))
    return None if raw is None else artifacts.get(ArtifactRef.from_json(raw))


def checkpoint_at(
    client: redis.Redis, artifacts: Artifacts, keys: Keys, tenant: str, job_id: str, step: int
) -> bytes | None:
    """The training state kept at ``step``, or None when retention dropped it."""
    raw = opt_bytes(client.hget(keys.job_part(tenant, job_id, JobPart.CHECKPOINT_INDEX), str(step)))
    return None if raw is None else artifacts.get(ArtifactRef.from_json(raw))


def source_data(client: redis.Redis, artifacts: Artifacts, source_key: str | None) -> bytes | None:
    """A job's dataset file: inline data sits in its hash's ``data`` field, an upload's ``ref`` points at the store,
    a reference's ``url`` at a bucket or directory outside it (``models.data.sources``)."""
    if not source_key:
        return None
    inline, ref, url = (opt_bytes(v) for v in client.hmget(source_key, ["data", "ref", "url"]))
    if inline is not None:
        return inline
    if url is not None:  # by reference: read with its tenant's credentials, from this process's settings
        return read_registered(json.loads(url), get_settings())
    return None if ref is None else artifacts.get(ArtifactRef.from_json(ref))


def checkpoint_entry(ref: ArtifactRef, *, step: int, epoch: int, time: float) -> str:
    """A checkpoint's record in the job's index: the public fields and where its bytes are."""
    return json.dumps(
        {"step": step, "epoch": epoch, "time": time, "bytes": ref.size, "key": ref.key, "sha256": ref.sha256}
    )
