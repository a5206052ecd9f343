"""The engine's hooks for a Celery job: records, captures and checkpoints go to Redis, guarded by the lease.

Every write a job makes goes through a Lua script that first checks the job's lease holds this
run's token, so a worker that lost its lease (stalled, or presumed dead and replaced) can never
overwrite the run that replaced it. Metric records are written only for steps above the last one
recorded, which makes a resumed run's replay of steps idempotent.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from typing import Any

import redis
import torch
from redis.typing import EncodableT
from torch import nn

from models.nn.state_codec import TrainState, pack_train_state
from models.store.artifacts import ArtifactRef, Artifacts, ArtifactUnavailable, checkpoint_key
from models.store.job_blobs import checkpoint_entry
from models.store.keys import JobPart, Keys
from models.store.summary import summary
from models.wire.tensors import scalar, to_safetensors
from worker.checkpoint import to_drop
from worker.engine import Hooks

log = logging.getLogger(__name__)

_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'queued' and status ~= 'running' then return status end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'leased' end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[3])
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
return 'ok'
"""

_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# ARGV: token, ttl_s, maxlen, n (progress args), progress field/value pairs..., then step/json pairs.
_RECORDS = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local last = tonumber(redis.call('HGET', KEYS[1], 'recorded_step') or '0')
local n = tonumber(ARGV[4])
for i = 5 + n, #ARGV, 2 do
  local step = tonumber(ARGV[i])
  if step > last then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', 'metric', 'data', ARGV[i + 1])
    last = step
  end
end
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 5, 4 + n)) end
redis.call('HSET', KEYS[1], 'recorded_step', last)
redis.call('EXPIRE', KEYS[3], ARGV[2])
return redis.call('EXISTS', KEYS[4])
"""

# ARGV: token, ttl_s, maxlen, event json, final (0/1), member, job id, field/value pairs...
_STATE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8, #ARGV)) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', 'state', 'data', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[2])
if ARGV[5] == '1' then
  redis.call('SREM', KEYS[4], ARGV[6])
  redis.call('SREM', KEYS[5], ARGV[7])
  redis.call('DEL', KEYS[2], KEYS[6])
end
return 1
"""

# KEYS: lease, resume record, job, index by step. ARGV: token, ttl_s, index entry (JSON: the object's record),
# step, steps to drop... The object is written before: a record never points at bytes not yet whole.
_CHECKPOINT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
redis.call('HSET', KEYS[3], 'checkpoint_step', ARGV[4])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[3])
for i = 5, #ARGV do redis.call('HDEL', KEYS[4], ARGV[i]) end
redis.call('EXPIRE', KEYS[4], ARGV[2])
return 1
"""


class JobKeys:
    def __init__(self, keys: Keys, tenant: str, job_id: str) -> None:
        self.tenant, self.job_id = tenant, job_id
        self.job = keys.job(tenant, job_id)
        self.member = f"{tenant}/{job_id}"
        self.running = keys.jobs_running()
        self.active = keys.jobs_active(tenant)

        def part(name: str) -> str:
            return keys.job_part(tenant, job_id, name)

        self.events, self.lease, self.cancel = part(JobPart.EVENTS), part(JobPart.LEASE), part(JobPart.CANCEL)
        self.resume = part(JobPart.RESUME)
        self.grads, self.grad_stats, self.graph = part(JobPart.GRADS), part(JobPart.GRAD_STATS), part(JobPart.GRAPH)
        self.data, self.prune, self.init = part(JobPart.DATA), part(JobPart.PRUNE), part(JobPart.INIT)
        self.checkpoint_index = part(JobPart.CHECKPOINT_INDEX)


class Lease:
    """This run's claim on the job, renewed from a thread so that long steps do not let it lapse."""

    def __init__(self, client: redis.Redis, jk: JobKeys, token: str, ttl_s: float) -> None:
        self.client, self.jk, self.token, self.ttl_ms = client, jk, token, int(ttl_s * 1000)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renew = client.register_script(_RENEW)
        self._thread = threading.Thread(target=self._run, name="gradserve-lease", daemon=True)

    def acquire(self, worker: str) -> str:
        """'ok', or why not: 'leased' (another run holds it), 'missing', or the job's final status."""
        start = self.client.register_script(_START)
        keys = [self.jk.job, self.jk.lease, self.jk.running]
        result = start(keys=keys, args=[self.token, self.ttl_ms, worker, time.time(), self.jk.member])
        return result.decode() if isinstance(result, bytes) else str(result)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self._renew(keys=[self.jk.lease], args=[self.token, self.ttl_ms]):
                    self.lost.set()
                    return
            except redis.RedisError:
                continue  # the lease may still hold; the next renewal tells


class RedisHooks(Hooks):
    def __init__(
        self,
        client: redis.Redis,
        jk: JobKeys,
        lease: Lease,
        artifacts: Artifacts,
        *,
        ttl_s: int,
        max_records: int,
        keep_last: int = 0,
        keep_every: int = 0,
    ) -> None:
        self.client, self.jk, self.lease, self.ttl_s, self.maxlen = client, jk, lease, ttl_s, max_records
        self.artifacts, self.keep_last, self.keep_every = artifacts, keep_last, keep_every
        self.cancelled = False
        self._records = client.register_script(_RECORDS)
        self._state = client.register_script(_STATE)
        self._checkpoint = client.register_script(_CHECKPOINT)

    # --- engine hooks ---
    def records(self, batch: list[dict[str, Any]]) -> None:
        progress: list[Any] = []
        for name, value in summary(batch).items():
            progress += [name, scalar(value)]
        if batch[0]["step"] == 1:
            progress += ["first_step_at", batch[0]["t"]]
        args: list[Any] = [self.lease.token, self.ttl_s, self.maxlen, len(progress), *progress]
        for rec in batch:
            args += [rec["step"], json.dumps(_finite_record(rec))]
        result = self._records(keys=[self.jk.job, self.jk.lease, self.jk.events, self.jk.cancel], args=args)
        if result == -1:
            self.lease.lost.set()
        elif result == 1:
            self.cancelled = True

    def gradients(self, step: int, grads: dict[str, torch.Tensor]) -> None:
        stats = {}
        if grads:
            names = list(grads)
            rows = torch.stack([_stats(grads[k]) for k in names]).tolist()  # one device sync
            for name, (norm, mean, std, low, high) in zip(names, rows, strict=True):
                stats[name] = {
                    "shape": list(grads[name].shape),
                    "norm": norm,
                    "mean": mean,
                    "std": std,
                    "min": low,
                    "max": high,
                }
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.jk.grads, str(step), to_safetensors(grads, metadata={"step": str(step)}))
        pipe.hset(self.jk.grad_stats, str(step), json.dumps(stats))
        pipe.expire(self.jk.grads, self.ttl_s)
        pipe.expire(self.jk.grad_stats, self.ttl_s)
        pipe.execute()

    def graph(self, loss: torch.Tensor, net: nn.Module) -> None:
        from models.nn.graph import trace

        dump = trace(loss, dict(net.named_parameters()))
        self.client.set(self.jk.graph, json.dumps(dump), ex=self.ttl_s)

    def checkpoint(self, state: TrainState) -> None:
        """Write the state to the artifact store, then record it; an object no record names is deleted.

        A store that fails the write raises ArtifactUnavailable: the attempt ends and the job resumes from
        the checkpoint recorded before, which is whole (the store's writes are atomic)."""
        blob = pack_train_state(state)
        nonce = uuid.uuid4().hex[:12]
        ref = self.artifacts.put(checkpoint_key(self.jk.tenant, self.jk.job_id, state.step, nonce), blob)
        entry = checkpoint_entry(ref, step=state.step, epoch=state.epoch, time=time.time())
        kept = {int(s): ArtifactRef.from_json(e).key for s, e in self.client.hgetall(self.jk.checkpoint_index).items()}
        drop = to_drop([*kept, state.step], self.keep_last, self.keep_every)
        keys = [self.jk.lease, self.jk.resume, self.jk.job, self.jk.checkpoint_index]
        args: list[EncodableT] = [self.lease.token, self.ttl_s, entry, state.step, *drop]
        if not self._checkpoint(keys=keys, args=args):
            self.lease.lost.set()
            self._forget([ref.key])
            return
        # A rerun's checkpoint at a step already kept replaced that record: its old object goes too.
        self._forget([kept[s] for s in {*drop, state.step} if s in kept])

    def _forget(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self.artifacts.delete(key)
            except ArtifactUnavailable:  # the sweep (worker.reaper) deletes objects no record names
                log.warning("checkpoint object %s left for the sweep", key)

    def should_stop(self) -> bool:
        return self.cancelled or self.lease.lost.is_set()

    # --- state changes ---
    def state(self, status: str, *, final: bool = False, **fields: Any) -> bool:
        event = {"status": status, **fields}
        flat: list[Any] = ["status", status]
        for name, value in fields.items():
            if value is not None:
                flat += [name, value if isinstance(value, (int, float, str)) else json.dumps(value)]
        keys = [self.jk.job, self.jk.lease, self.jk.events, self.jk.running, self.jk.active, self.jk.cancel]
        args = [
            self.lease.token,
            self.ttl_s,
            self.maxlen,
            json.dumps(event),
            int(final),
            self.jk.member,
            self.jk.job_id,
            *flat,
        ]
        return bool(self._state(keys=keys, args=args))


def _finite_record(rec: dict[str, Any]) -> dict[str, Any]:
    """Non-finite numbers as null, with the value beside them: ``{"loss": null, "non_finite": {"loss": "inf"}}``."""
    bad = {k: str(v) for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v)}
    return {**rec, **dict.fromkeys(bad), "non_finite": bad} if bad else rec


def _stats(g: torch.Tensor) -> torch.Tensor:
    g = g.detach().float()
    std = g.std() if g.numel() > 1 else torch.zeros((), device=g.device)
    return torch.stack([g.norm(), g.mean(), std, g.min(), g.max()])
