"""Async storage of jobs and datasets for the API. Key names come from models.store.keys; the worker side
of the same keys (lease-guarded writes) is worker/recorder.py.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis.asyncio import Redis

from models.errors import NotFound, TooManyRequests
from models.store.artifacts import (
    ArtifactRef,
    Artifacts,
    ArtifactUnavailable,
    dataset_key,
    dataset_prefix,
    job_blob_key,
    job_prefix,
)
from models.store.keys import JobPart, Keys, job_parts
from models.store.replies import (
    Entry,
    byte_fields,
    first_stream,
    members,
    opt_bytes,
    opt_text,
    required,
    stream_entries,
    text,
)
from models.store.usage import LEDGER_LUA, ledgers, over_quota, put_within_quota, summary

log = logging.getLogger(__name__)

_INTS = (
    "step",
    "total_steps",
    "epoch",
    "attempt",
    "resent",
    "checkpoint_step",
    "resumed_from",
    "batch_size",
    "threads",
    "world_size",
)
_FLOATS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "samples_per_s",
    "overall_samples_per_s",
    "created_at",
    "started_at",
    "finished_at",
    "first_step_at",
)
_TEXT = ("id", "status", "error", "device", "device_used", "queue", "worker", "network_id", "name", "sweep")
_JSON = ("tags", "parent", "training", "breakpoint")

_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' or status == 'paused' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type', 'state', 'data', ARGV[4])
  redis.call('SREM', KEYS[4], ARGV[5])
  return 'cancelled'
end
if status == 'running' then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
  return 'cancelling'
end
return 'ended:' .. status
"""

# KEYS: the job hash, the events, the tenant's active set, the queued set. ARGV: job id, max concurrent,
# changes (JSON), ttl, maxlen, the queued event, now, member, job key prefix, the new request ('' keeps it).
_RESUME = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'paused' then return 'not:' .. status end
local active = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local s = redis.call('HGET', ARGV[9] .. id, 'status')
  if s == 'queued' or s == 'running' then active = active + 1 end
end
if active >= tonumber(ARGV[2]) then return 'busy:' .. active end
redis.call('HSET', KEYS[1], 'status', 'queued', 'resume_changes', ARGV[3])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'request', ARGV[10]) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'type', 'state', 'data', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8])
return 'queued'
"""

# KEYS: the job hash, the tenant's index, the tenant's active set, then every part. ARGV: job id.
_DELETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' or status == 'running' then return 'busy:' .. status end
redis.call('DEL', unpack(KEYS, 4))
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 'deleted'
"""


# KEYS: the four usage ledgers (jobs' the third), job, data, events, index, active set, queued set. ARGV: bytes to book,
# quota, max concurrent, ttl, maxlen, queued event, created_at, member, job id, job key prefix, data, then
# the job's field/value pairs. Returns {1, 0}, {2, active jobs} or {3, bytes used}.
_ADMIT = (
    LEDGER_LUA
    + """
local active = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[9])) do
  local status = redis.call('HGET', ARGV[10] .. id, 'status')
  if status == 'queued' or status == 'running' then active = active + 1
  else redis.call('SREM', KEYS[9], id) end
end
if active >= tonumber(ARGV[3]) then return {2, active} end
local used = ledger_bytes(1, 4)
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return {3, used} end
local ttl = ARGV[4]
redis.call('HSET', KEYS[5], unpack(ARGV, 12, #ARGV))
redis.call('EXPIRE', KEYS[5], ttl)
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[6], 'data', ARGV[11])
  redis.call('EXPIRE', KEYS[6], ttl)
end
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[5], '*', 'type', 'state', 'data', ARGV[6])
redis.call('EXPIRE', KEYS[7], ttl)
redis.call('ZADD', KEYS[8], ARGV[7], ARGV[9])
redis.call('EXPIRE', KEYS[8], ttl)
redis.call('SADD', KEYS[9], ARGV[9])
redis.call('EXPIRE', KEYS[9], ttl)
redis.call('ZADD', KEYS[3], ARGV[1], KEYS[5])
if redis.call('TTL', KEYS[3]) < tonumber(ttl) then redis.call('EXPIRE', KEYS[3], ttl) end
redis.call('ZADD', KEYS[10], ARGV[7], ARGV[8])
return {1, 0}
"""
)


def _num(raw: bytes | None, kind: type[int | float]) -> Any:
    if raw is None:
        return None
    value = raw.decode()
    try:
        return kind(value) if kind is int else (float(value) if value not in {"nan", "inf", "-inf"} else value)
    except ValueError:
        return value


class JobStore:
    def __init__(self, redis: Redis, keys: Keys, artifacts: Artifacts) -> None:
        self.redis = redis
        self.keys = keys
        self.artifacts = artifacts

    def part(self, tenant: str, job_id: str, name: str) -> str:
        return self.keys.job_part(tenant, job_id, name)

    # --- jobs ---
    async def active_count(self, *, tenant: str) -> int:
        """Queued or running jobs of the tenant, read only: admission itself counts (and prunes) in its script."""
        ids = [text(m) for m in await self.redis.smembers(self.keys.jobs_active(tenant))]
        if not ids:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for m in ids:
            pipe.hget(self.keys.job(tenant, m), "status")
        statuses = await pipe.execute()
        return sum(1 for s in statuses if opt_text(s) in {"queued", "running"})

    async def create_job(
        self,
        *,
        tenant: str,
        job_id: str,
        fields: dict[str, Any],
        data: bytes | None,
        ttl_s: int,
        max_records: int,
        max_concurrent: int,
        storage_bytes: int,
        quota: int,
        state: bytes | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        """Take one of the tenant's concurrent-job slots and its storage, and create the job queued, all
        in one script: of simultaneous submissions exactly the quota's worth get in (else 429 / 413).

        A fork also gets the state it starts from and its parent's records up to it; they are written
        after admission and before the job's message is sent, so its worker always finds them.
        """
        start = None
        if state is not None:  # written before admission: a queued fork always finds whole bytes
            key = job_blob_key(tenant, job_id, "fork-start.safetensors")
            start = await self.artifacts.put_async(key, state)
        try:
            await self._admit(tenant, job_id, fields, data, ttl_s, max_records, max_concurrent, storage_bytes, quota)
        except BaseException:
            if start is not None:
                await self._forget(job_prefix(tenant, job_id))
            raise
        if start is None and not history:
            return
        pipe = self.redis.pipeline(transaction=True)
        if start is not None:
            pipe.set(self.part(tenant, job_id, JobPart.RESUME), start.to_json(), ex=ttl_s)
        events = self.part(tenant, job_id, JobPart.EVENTS)
        for record in history or []:
            pipe.xadd(events, {"type": "metric", "data": json.dumps(record)}, maxlen=max_records, approximate=True)
        await pipe.execute()

    async def _admit(
        self,
        tenant: str,
        job_id: str,
        fields: dict[str, Any],
        data: bytes | None,
        ttl_s: int,
        max_records: int,
        max_concurrent: int,
        storage_bytes: int,
        quota: int,
    ) -> None:
        script = self.redis.register_script(_ADMIT)
        pairs = [part for k, v in fields.items() if v is not None for part in (k, v)]
        event = json.dumps({"status": "queued", "step": 0})
        keys = [
            *ledgers(self.keys, tenant),
            self.keys.job(tenant, job_id),
            self.part(tenant, job_id, JobPart.DATA),
            self.part(tenant, job_id, JobPart.EVENTS),
            self.keys.job_index(tenant),
            self.keys.jobs_active(tenant),
            self.keys.jobs_queued(),
        ]
        args = [
            storage_bytes,
            quota,
            max_concurrent,
            ttl_s,
            max_records,
            event,
            fields["created_at"],
            f"{tenant}/{job_id}",
            job_id,
            self.keys.job(tenant, ""),
            data if data is not None else "",
            *pairs,
        ]
        code, count = await script(keys=keys, args=args)
        if code == 2:
            raise TooManyRequests(
                f"{count} jobs are already queued or running (GRADSERVE_MAX_CONCURRENT_JOBS is {max_concurrent}); "
                "wait for one to finish or cancel one"
            )
        if code == 3:
            raise over_quota(used=int(count), adding=storage_bytes, quota=quota, what="the job")

    async def get_job(self, *, tenant: str, job_id: str, with_request: bool = False) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.job(tenant, job_id))
        return None if not raw else self._public(byte_fields(raw), with_request)

    @staticmethod
    def _public(raw: dict[bytes, bytes], with_request: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {k: (raw[k.encode()].decode() if k.encode() in raw else None) for k in _TEXT}
        doc.update({k: _num(raw.get(k.encode()), int) for k in _INTS})
        doc.update({k: _num(raw.get(k.encode()), float) for k in _FLOATS})
        doc.update({k: json.loads(raw[k.encode()]) if k.encode() in raw else None for k in _JSON})
        doc["tags"] = doc["tags"] or []
        doc["step"] = doc["step"] or 0
        doc["resent"] = doc["resent"] or 0  # worker.reaper counts re-sends; none yet is no field
        if with_request and b"request" in raw:
            doc["request"] = json.loads(raw[b"request"])
        return doc

    async def list_jobs(
        self, *, tenant: str, status: str | None, name: str | None, tags: list[str], offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first, those matching every filter given. Returns (one page, how many match in all)."""
        index = self.keys.job_index(tenant)
        ids = members(await self.redis.zrevrange(index, 0, -1))
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(self.keys.job(tenant, job_id), "status", "name", "tags")
        matches: list[str] = []
        gone: list[str] = []
        for job_id, (st, nm, tg) in zip(ids, await pipe.execute(), strict=True):
            if st is None:
                gone.append(job_id)
            elif (
                (status is None or text(st) == status)
                and (name is None or opt_text(nm) == name)
                and (not tags or set(tags) <= set(json.loads(tg or b"[]")))
            ):
                matches.append(job_id)
        if gone:  # expired jobs leave their index entry behind; drop it
            await self.redis.zrem(index, *gone)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in matches[offset : offset + limit]:
            pipe.hgetall(self.keys.job(tenant, job_id))
        page = [self._public(byte_fields(raw), False) for raw in await pipe.execute() if raw]
        return page, len(matches)

    async def delete(self, *, tenant: str, job_id: str) -> str:
        """'deleted', 'missing', or 'busy:<status>' for a job that is queued or running."""
        script = self.redis.register_script(_DELETE)
        keys = [self.keys.job(tenant, job_id), self.keys.job_index(tenant), self.keys.jobs_active(tenant)]
        keys += [self.part(tenant, job_id, p) for p in job_parts()]
        result = await script(keys=keys, args=[job_id])
        outcome = result.decode() if isinstance(result, bytes) else str(result)
        if outcome == "deleted":
            await self._forget(job_prefix(tenant, job_id))
        return outcome

    async def _forget(self, prefix: str) -> None:
        """Delete the objects under ``prefix`` whose records are gone; a store that is down leaves them to the
        sweep (worker.reaper), which deletes objects whose Redis record is gone."""
        try:
            await self.artifacts.delete_prefix_async(prefix)
        except ArtifactUnavailable:
            log.warning("objects under %s left for the sweep", prefix)

    async def cancel_requested(self, *, tenant: str, job_id: str) -> bool:
        return bool(await self.redis.exists(self.part(tenant, job_id, JobPart.CANCEL)))

    async def cancel(self, *, tenant: str, job_id: str, ttl_s: int, max_records: int) -> str:
        """'cancelled' (it was queued), 'cancelling' (its worker stops after this step), 'missing',
        or 'ended:<status>'."""
        script = self.redis.register_script(_CANCEL)
        keys = [
            self.keys.job(tenant, job_id),
            self.part(tenant, job_id, JobPart.EVENTS),
            self.part(tenant, job_id, JobPart.CANCEL),
            self.keys.jobs_active(tenant),
        ]
        event = json.dumps({"status": "cancelled", "reason": "cancelled while queued"})
        result = await script(keys=keys, args=[time.time(), ttl_s, max_records, event, job_id])
        return result.decode() if isinstance(result, bytes) else str(result)

    async def resume(
        self,
        *,
        tenant: str,
        job_id: str,
        changes: dict[str, Any],
        max_concurrent: int,
        ttl_s: int,
        max_records: int,
        request: str | None = None,
    ) -> str:
        """'queued', 'missing', 'not:<status>' (it is not paused), or 'busy:<active jobs>' (over the quota).
        ``request``: the job's request as it goes on (new breakpoints), stored only if it does resume."""
        script = self.redis.register_script(_RESUME)
        keys = [
            self.keys.job(tenant, job_id),
            self.part(tenant, job_id, JobPart.EVENTS),
            self.keys.jobs_active(tenant),
            self.keys.jobs_queued(),
        ]
        event = json.dumps({"status": "queued", "reason": "resumed", "changes": changes})
        prefix = self.keys.job(tenant, "")
        args: list[str | int | float] = [job_id, max_concurrent, json.dumps(changes), ttl_s, max_records, event]
        result = await script(keys=keys, args=[*args, time.time(), f"{tenant}/{job_id}", prefix, request or ""])
        return result.decode() if isinstance(result, bytes) else str(result)

    # --- records ---
    async def metric_records(self, *, tenant: str, job_id: str, since: int | None) -> list[dict[str, Any]]:
        """Metric records in step order, only those after step ``since`` when given."""
        key = self.part(tenant, job_id, JobPart.EVENTS)
        entries: list[Entry]
        if since is None:
            entries = stream_entries(await self.redis.xrange(key))
        else:  # polling: read backwards only as far as needed
            entries, upper = [], "+"
            while True:
                page = stream_entries(await self.redis.xrevrange(key, max=upper, count=1000))
                if not page:
                    break
                done = False
                for entry_id, fields in page:
                    if fields[b"type"] == b"metric" and json.loads(fields[b"data"])["step"] <= since:
                        done = True
                        break
                    entries.append((entry_id, fields))
                if done or len(page) < 1000:
                    break
                upper = "(" + page[-1][0]
            entries.reverse()
        return [json.loads(f[b"data"]) for _, f in entries if f[b"type"] == b"metric"]

    async def events(self, *, tenant: str, job_id: str, after: str, block_ms: int) -> list[tuple[str, str, str]]:
        """Stream entries after id ``after``: (id, type, JSON data); waits up to ``block_ms`` for the first."""
        key = self.part(tenant, job_id, JobPart.EVENTS)
        got = first_stream(await self.redis.xread({key: after}, count=1000, block=block_ms or None))
        return [(i, f[b"type"].decode(), f[b"data"].decode()) for i, f in got]

    async def raw_field(self, *, tenant: str, job_id: str, name: str) -> bytes | None:
        """One field of the job hash as stored (``network``, ``request``, ``plan``: JSON)."""
        return opt_bytes(await self.redis.hget(self.keys.job(tenant, job_id), name))

    async def copy_init(self, *, tenant: str, job_id: str, source: str, ttl_s: int) -> None:
        """An exported network's programs and initial weights into the job's own INIT hash (a 404 when they are
        gone), so the job and its forks outlive the network."""
        target = self.part(tenant, job_id, JobPart.INIT)
        if source != target and not await self.redis.copy(source, target, replace=True):
            raise NotFound("the exported network's programs and weights are gone (deleted or expired); upload it again")
        await self.redis.expire(target, ttl_s)

    async def init_parts(self, *, tenant: str, job_id: str) -> dict[str, bytes]:
        """An exported network's programs and initial weights, as the job's INIT hash holds them."""
        got = await self.redis.hgetall(self.part(tenant, job_id, JobPart.INIT))
        if not got:
            raise NotFound(f"job '{job_id}''s exported programs have expired")
        return {opt_text(k) or "": required(opt_bytes(v), "an INIT field") for k, v in got.items()}

    async def inline_data(self, *, tenant: str, job_id: str) -> bytes | None:
        """The safetensors file of a job's inline dataset (kept under the job's own DATA part)."""
        return opt_bytes(await self.redis.hget(self.part(tenant, job_id, JobPart.DATA), "data"))

    async def status(self, *, tenant: str, job_id: str) -> str | None:
        return opt_text(await self.redis.hget(self.keys.job(tenant, job_id), "status"))

    # --- captures ---
    async def gradient_steps(self, *, tenant: str, job_id: str) -> list[int]:
        return sorted(int(s) for s in await self.redis.hkeys(self.part(tenant, job_id, JobPart.GRAD_STATS)))

    async def gradient_stats(self, *, tenant: str, job_id: str, step: int) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.part(tenant, job_id, JobPart.GRAD_STATS), str(step))
        return None if raw is None else json.loads(raw)

    async def gradient_file(self, *, tenant: str, job_id: str, step: int) -> bytes | None:
        return opt_bytes(await self.redis.hget(self.part(tenant, job_id, JobPart.GRADS), str(step)))

    async def all_gradient_stats(self, *, tenant: str, job_id: str) -> dict[int, dict[str, Any]]:
        """Every captured step's per-parameter statistics, by step."""
        raw = await self.redis.hgetall(self.part(tenant, job_id, JobPart.GRAD_STATS))
        return {int(step): json.loads(stats) for step, stats in raw.items()}

    async def graph(self, *, tenant: str, job_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.part(tenant, job_id, JobPart.GRAPH))
        return None if raw is None else json.loads(raw)

    async def checkpoints(self, *, tenant: str, job_id: str) -> list[dict[str, Any]]:
        """Every kept checkpoint ({step, epoch, time, bytes}), in step order."""
        raw = await self.redis.hvals(self.part(tenant, job_id, JobPart.CHECKPOINT_INDEX))
        return sorted((json.loads(r) for r in raw), key=lambda c: c["step"])

    async def checkpoint_state(self, *, tenant: str, job_id: str, step: int) -> bytes | None:
        """The full training state (models.nn.state_codec.pack_train_state) kept at ``step``."""
        raw = await self.redis.hget(self.part(tenant, job_id, JobPart.CHECKPOINT_INDEX), str(step))
        return None if raw is None else await self.artifacts.get_async(ArtifactRef.from_json(raw))

    async def export_file(self, *, tenant: str, job_id: str, name: str) -> bytes | None:
        raw = await self.redis.hget(self.part(tenant, job_id, JobPart.EXPORTS), name)
        return None if raw is None else await self.artifacts.get_async(ArtifactRef.from_json(raw))

    async def export_kept(self, *, tenant: str, job_id: str, name: str) -> bool:
        return bool(await self.redis.hexists(self.part(tenant, job_id, JobPart.EXPORTS), name))

    async def put_export(self, *, tenant: str, job_id: str, name: str, blob: bytes, ttl_s: int) -> None:
        ref = await self.artifacts.put_async(job_blob_key(tenant, job_id, f"exports/{name.replace(':', '-')}"), blob)
        key = self.part(tenant, job_id, JobPart.EXPORTS)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, name, ref.to_json())
        pipe.expire(key, ttl_s)
        await pipe.execute()

    async def put_archive(self, *, tenant: str, job_id: str, attempt: str, blob: bytes) -> str:
        """A one-off file a worker made for one request (a TensorBoard archive), as its record's JSON: the API
        takes it with ``take_archive``; one left behind goes with the job's prefix."""
        ref = await self.artifacts.put_async(job_blob_key(tenant, job_id, f"archives/{attempt}"), blob)
        return ref.to_json()

    async def take_archive(self, ref: str) -> bytes:
        got = ArtifactRef.from_json(ref)
        blob = await self.artifacts.get_async(got)
        await self.artifacts.delete_async(got.key)
        return blob

    # --- datasets ---
    async def put_dataset(
        self, *, tenant: str, dataset_id: str, meta: dict[str, Any], data: bytes, ttl_s: int, quota: int
    ) -> None:
        """Store a dataset's file in the artifact store and its record (``record_dataset``)."""
        ref = await self.artifacts.put_async(dataset_key(tenant, dataset_id), data)
        await self.record_dataset(tenant=tenant, dataset_id=dataset_id, meta=meta, ref=ref, ttl_s=ttl_s, quota=quota)

    async def storage_left(self, *, tenant: str, quota: int) -> int:
        """Bytes the tenant may still store: a streamed upload stops there rather than fill the store first
        (``record_dataset`` still books the bytes atomically)."""
        used = sum(kind["bytes"] for kind in (await summary(self.redis, self.keys, tenant=tenant)).values())
        return max(0, quota - used)

    async def record_dataset(
        self,
        *,
        tenant: str,
        dataset_id: str,
        meta: dict[str, Any],
        ref: ArtifactRef | None,
        ttl_s: int,
        quota: int,
        fields: dict[str, str] | None = None,
    ) -> None:
        """The record of a dataset whose file is in the store (``ref``), within the tenant's storage quota (else
        413, and the file is deleted again): Redis keeps ``meta`` and ``ref``, the quota counts the file's bytes.
        A dataset by reference has no file here (``ref`` None) and its own ``fields``; it counts nothing."""
        value = {"meta": json.dumps(meta), **(fields or {})}
        if ref is not None:
            value["ref"] = ref.to_json()
        try:
            await put_within_quota(
                self.redis,
                self.keys,
                tenant=tenant,
                kind="datasets",
                key=self.keys.dataset(tenant, dataset_id),
                value=value,
                size=0 if ref is None else ref.size,
                ttl_s=ttl_s,
                quota=quota,
                what=f"the dataset ({meta['bytes']:,} bytes as stored)",
            )
        except BaseException:
            await self._forget(dataset_prefix(tenant, dataset_id))
            raise

    async def delete_dataset(self, *, tenant: str, dataset_id: str) -> bool:
        """Delete a dataset and its file; False when there was none. Its ledger entry goes at the next sum."""
        if not await self.redis.delete(self.keys.dataset(tenant, dataset_id)):
            return False
        await self._forget(dataset_prefix(tenant, dataset_id))
        return True

    async def dataset_meta(self, *, tenant: str, dataset_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(self.keys.dataset(tenant, dataset_id), "meta")
        return None if raw is None else json.loads(raw)
