"""One run of a job on this worker: claim the lease, rebuild everything from Redis, resume from the
last checkpoint if there is one, train, and record the outcome. Failures end the job, not the worker.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
import torch

from models.errors import GradserveError, first_line
from models.nn.build import build_network
from models.nn.objectives import build_loss, build_optimizer, build_scheduler
from models.nn.state_codec import unpack_train_state
from models.settings import Settings
from models.spec.job import JobCreate
from models.spec.network import NetworkSpec
from models.store.artifacts import Artifacts, ArtifactUnavailable, shared_artifacts
from models.store.job_blobs import resume_state, source_data
from models.store.keys import Keys
from models.store.replies import opt_bytes, required
from models.wire.tensors import from_safetensors
from worker.breakpoints import Paused, Rules
from worker.data_parallel import Group, peer_lost
from worker.datasets import DataError, materialize
from worker.engine import Hooks, NonFiniteLoss, TrainConfig, Trainer, choose_device
from worker.fork import start_fork
from worker.recorder import JobKeys, Lease, RedisHooks

if TYPE_CHECKING:
    from models.nn.exported_admit import Built

log = logging.getLogger(__name__)


_FIELDS = ("request", "network", "plan", "attempt", "source_key", "fork", "checkpoint_step", "resume_changes")


def run_job(client: redis.Redis, keys: Keys, settings: Settings, *, tenant: str, job_id: str, worker: str) -> str:
    """Run the job if nobody else is; return what happened (a final status, or why it did not run)."""
    jk = JobKeys(keys, tenant, job_id)
    lease = Lease(client, jk, f"{worker}/{uuid.uuid4().hex}", settings.job_lease_ttl_s)
    claimed = lease.acquire(worker)
    if claimed != "ok":
        log.info("job %s not run: %s", job_id, claimed)
        return claimed
    lease.start()
    try:
        req = _request(client, jk)
        if req is not None and req.world_size > 1:
            from worker.launch import run_group  # the elastic agent's imports, only where a job needs them

            return run_group(client, settings, jk, lease, req.resources)
        return train(client, keys, settings, jk, lease)
    except (redis.ConnectionError, redis.TimeoutError):
        log.warning("job %s lost Redis as it started; it resumes once Redis is back", job_id)
        return "redis unreachable"
    finally:
        lease.stop()


def _request(client: redis.Redis, jk: JobKeys) -> JobCreate | None:
    raw = opt_bytes(client.hget(jk.job, "request"))
    try:
        return JobCreate.model_validate_json(required(raw, "the job's request"))
    except Exception:  # train() reads it again and records why it cannot run
        return None


def train(
    client: redis.Redis, keys: Keys, settings: Settings, jk: JobKeys, lease: Lease, group: Group | None = None
) -> str:
    """The job's training in this process under ``lease`` (held by this process or, for rank 0 of a
    group, by the job worker that started it); records its state, metrics and checkpoints."""
    job_id = jk.job_id
    artifacts = shared_artifacts(settings)
    hooks = RedisHooks(
        client,
        jk,
        lease,
        artifacts,
        ttl_s=settings.job_ttl_s,
        max_records=settings.job_max_records,
        keep_last=settings.checkpoint_keep_last,
        keep_every=settings.checkpoint_keep_every,
    )
    trainer: Trainer | None = None
    device = torch.device("cpu")
    try:
        raw = [opt_bytes(v) for v in client.hmget(jk.job, list(_FIELDS))]
        req = JobCreate.model_validate_json(required(raw[0], "the job's request"))
        device = rank_device(req, group)
        trainer = prepare(client, artifacts, keys, jk, raw, req, device, group, hooks)
        # The elastic agent numbers its restarts of a group whose rank failed: each resumed from the checkpoint.
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) if group is not None else 0
        restarted: dict[str, Any] = {"restart": restart} if restart else {}
        hooks.state(
            "running",
            **restarted,
            device_used=str(device),
            threads=torch.get_num_threads(),  # exactness against a local run holds at this count
            world_size=1 if group is None else group.world_size,
            attempt=int(raw[3] or 1),
            resumed_from=trainer.step,
        )
        outcome = trainer.run(hooks)
        if outcome == "finished":
            hooks.state("succeeded", final=True, finished_at=time.time(), step=trainer.step)
            return "succeeded"
        if hooks.cancelled and not lease.lost.is_set():
            hooks.checkpoint(trainer.state())
            ended = "pruned" if client.exists(jk.prune) else "cancelled"  # a sweep's pruner stopped it
            hooks.state(ended, final=True, finished_at=time.time(), step=trainer.step)
            return ended
        return "lease lost"
    except Paused as paused:
        # Nothing of the paused step is applied: its state is the one to resume from, or open a session at.
        hooks.checkpoint(paused.state)
        hooks.state("paused", final=True, step=paused.state.step, breakpoint=paused.hit.doc())
        log.info("job %s paused: %s", job_id, paused)
        return "paused"
    except (redis.ConnectionError, redis.TimeoutError):
        # Redis went away, not the job: leave it running; its lease lapses and, once Redis is back, a
        # reaper re-enqueues it to resume from its last checkpoint. Marking it failed would lose it.
        log.warning("job %s lost Redis mid-run; it resumes from its checkpoint once Redis is back", job_id)
        return "redis unreachable"
    except ArtifactUnavailable as exc:
        # As with Redis: this attempt ends, its lease lapses and a reaper re-enqueues the job, which resumes
        # from the last checkpoint recorded (whole: no record names an object before its write completed).
        log.warning("job %s: attempt ended, the artifact store failed: %s", job_id, exc.msg)
        try:
            resumes_from = int(client.hget(jk.job, "checkpoint_step") or 0)
            hooks.state("running", attempt_failed=exc.msg, resumes_from=resumes_from)
        except redis.RedisError:
            pass
        return "artifact store unreachable"
    except Exception as exc:  # any failure ends this job, never the worker
        if group is not None and peer_lost(exc):
            raise  # another rank failed first: the job worker that started the group records which and why
        error = _describe(exc, device)
        if not isinstance(exc, (NonFiniteLoss, DataError, GradserveError, torch.OutOfMemoryError)):
            log.exception("job %s failed", job_id)
        try:
            step = exc.step if isinstance(exc, NonFiniteLoss) else (trainer.step if trainer else 0)
            hooks.state("failed", final=True, finished_at=time.time(), error=error, step=step)
        except redis.RedisError:
            log.exception("could not record the failure of job %s", job_id)
        return "failed"
    finally:
        del trainer
        _free(device)


def follow(client: redis.Redis, keys: Keys, settings: Settings, jk: JobKeys, group: Group) -> None:
    """A rank other than 0: the same trainer, from the same checkpoint, with nothing recorded."""
    raw = [opt_bytes(v) for v in client.hmget(jk.job, list(_FIELDS))]
    req = JobCreate.model_validate_json(required(raw[0], "the job's request"))
    artifacts = shared_artifacts(settings)
    # The leader alone fails the job on a non-finite loss (and tells the others by leaving the group).
    device = rank_device(req, group)
    trainer = prepare(client, artifacts, keys, jk, raw, req, device, group, None, stop_on_nan=False)
    trainer.run(Hooks())


def rank_device(req: JobCreate, group: Group | None) -> torch.device:
    device = choose_device(req.device, torch.cuda.is_available())
    if group is None or device.type != "cuda":
        return device
    if group.rank >= torch.cuda.device_count():
        raise RuntimeError(
            f"the job asks for {group.world_size} processes, one GPU each, "
            f"but this worker sees {torch.cuda.device_count()} GPUs"
        )
    return torch.device("cuda", group.rank)


def prepare(
    client: redis.Redis,
    artifacts: Artifacts,
    keys: Keys,
    jk: JobKeys,
    raw: list[bytes | None],
    req: JobCreate,
    device: torch.device,
    group: Group | None,
    hooks: RedisHooks | None,
    **overrides: Any,
) -> Trainer:
    """The job's trainer, from its last checkpoint if it has one. ``raw``: the job's ``_FIELDS``, read by every
    rank before it builds its trainer: DDP's constructor is a collective, so no rank can write anything
    (a checkpoint's step, the resume changes dropped) before every rank has read them."""
    spec = _network(client, jk.init, required(raw[1], "the job's network"))
    plan: dict[str, Any] = json.loads(required(raw[2], "the job's plan"))
    source_key = raw[4].decode() if raw[4] else None
    trainer = _build(client, artifacts, req, spec, plan, device, source_key, group=group, **overrides)
    blob = resume_state(client, artifacts, keys, jk.tenant, jk.job_id)
    if blob is not None and raw[5] is not None and raw[6] is None:  # a fork's first start, from its parent
        start_fork(trainer, unpack_train_state(blob), json.loads(raw[5]), req)
    elif blob is not None:
        trainer.load_state(unpack_train_state(blob))
    if raw[7] is not None:  # resumed from a breakpoint, with changes
        apply_resume(trainer, json.loads(raw[7]))
        if hooks is not None:
            hooks.checkpoint(trainer.state())  # from here a lost worker resumes with the changes made
            client.hdel(jk.job, "resume_changes")
    return trainer


def _build(
    client: redis.Redis,
    artifacts: Artifacts,
    req: JobCreate,
    spec: NetworkSpec | _Exported,
    plan: dict[str, Any],
    device: torch.device,
    source_key: str | None,
    group: Group | None = None,
    **overrides: Any,
) -> Trainer:
    """The job's trainer as its run starts; ``overrides``: TrainConfig fields a replay changes."""
    blob = source_data(client, artifacts, source_key)
    data = materialize(req.dataset.model_dump(), plan, blob).to(device)
    torch.manual_seed(req.seed)  # before an exported network too: the RNG then draws dropout and data order
    net = (spec.build() if isinstance(spec, _Exported) else build_network(spec)).to(device)
    if req.channels_last:
        # Before the optimizer, which holds these parameters; torch annotates Module.to without memory_format.
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    criterion = build_loss(req.criterion, device)
    optimizer = build_optimizer(req.optimizer, net.parameters())
    sched = req.lr_scheduler
    scheduler = None if sched is None else build_scheduler(sched, optimizer, plan["total_steps"])
    cfg = TrainConfig(
        total_steps=plan["total_steps"],
        batch_size=req.batch_size,
        seed=req.seed,
        shuffle=req.shuffle,
        classification=plan["targets"] == "class",
        gradients_every=req.capture.gradients_every,
        graph=req.capture.graph,
        checkpoint_every=req.capture.checkpoint_every,
        stop_on_nan=req.stop_on_nan,
        flush_every=16 if device.type == "cuda" else 256,
        clip_grad_norm=req.clip_grad_norm,
        accumulate=req.accumulate_grad_batches,
        precision=req.precision,
        compile=req.compile,
        channels_last=req.channels_last,
        breakpoints=_rules(req),
        scheduler_interval="epoch" if sched is None else sched.interval,
    )
    return Trainer(net, criterion, optimizer, data, dataclasses.replace(cfg, **overrides), scheduler, group)


def _rules(req: JobCreate) -> Rules | None:
    bp = req.breakpoints
    if bp is None or not bp.any():
        return None
    spike = bp.loss_spike
    return Rules(
        nonfinite=bp.nonfinite,
        grad_norm_above=bp.grad_norm_above,
        loss_above=bp.loss_above,
        spike_factor=None if spike is None else spike.factor,
        spike_window=20 if spike is None else spike.window,
    )


def apply_resume(trainer: Trainer, changes: dict[str, Any]) -> None:
    """A paused job's changes as it resumes: a learning rate from here on, or the paused step's batches left out.
    Without ``skip_batch`` the paused step runs unchecked, as a debugger's "continue" does."""
    if "lr" in changes:
        for group in trainer.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = changes["lr"]
        if trainer.scheduler is not None:  # the schedule goes on from the new rate
            trainer.scheduler.base_lrs = [changes["lr"]] * len(trainer.optimizer.param_groups)
    if changes.get("skip_batch"):
        trainer.skip_step()  # the step is taken on the next batch, and checked as any other
    elif trainer.watch is not None:
        trainer.watch.passed = trainer.step + 1  # else the rule would hold again on the same numbers


@dataclass(frozen=True)
class _Exported:
    """An exported network's stored description, and its programs and initial weights from the job's INIT."""

    meta: dict[str, Any]
    weights: bytes

    def build(self) -> torch.nn.Module:
        return self.built().net

    def built(self) -> Built:
        # Imported here: torch.export's modules take seconds to import, which every rank of a job would pay.
        from models.nn.exported_admit import build_stored

        return build_stored(self.meta, from_safetensors(self.weights, loc=("network", "weights")))


def _network(client: redis.Redis, init_key: str, raw: bytes) -> NetworkSpec | _Exported:
    doc = json.loads(raw)
    if doc.get("format") != "export":
        return NetworkSpec.model_validate(doc)
    fields = [f"{m}_program" for m in doc["modes"]] + ["weights"]
    got = [opt_bytes(v) for v in client.hmget(init_key, fields)]
    if any(v is None for v in got):
        raise DataError("the job's exported programs and weights have expired")
    programs = {m: required(v, m).decode() for m, v in zip(doc["modes"], got, strict=False)}
    return _Exported({"form": doc["form"], "programs": programs}, required(got[-1], "weights"))


def _describe(exc: BaseException, device: torch.device) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory on {device}: {first_line(exc)} (try a smaller batch_size)"
    if isinstance(exc, (NonFiniteLoss, DataError)):
        return str(exc)
    if isinstance(exc, GradserveError):
        return exc.msg
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def _free(device: torch.device) -> None:
    """On a GPU, hand this job's memory back now: the next job may need all of it. (On a CPU, reference
    counting has already freed the tensors, and a full collection would delay the next job by ~100 ms.)"""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
