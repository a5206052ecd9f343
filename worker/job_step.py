"""A job's exact state before one of its steps, rebuilt on a worker: the nearest kept checkpoint (or the
job's seeded start), then the steps from there replayed as the job ran them. Training is deterministic
and resumes bit for bit, so the state reached is the job's own: weights, optimizer, scheduler, RNG and
the data order, with step K's batch next.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import redis
import torch

from models.errors import Conflict
from models.nn.state_codec import TrainState, pack_train_state, unpack_train_state
from models.settings import get_settings
from models.spec.job import JobCreate
from models.store.artifacts import shared_artifacts
from models.store.job_blobs import checkpoint_at
from models.store.keys import JobPart, Keys
from models.store.replies import opt_bytes, required
from models.wire.session import OCTET
from worker.engine import Hooks, Trainer, choose_device
from worker.jobs import _build, _Exported, _network
from worker.sessions import LiveSession, Outcome


@dataclass
class StepState:
    trainer: Trainer  # after step - 1 steps; the global RNG is the job's as step ``step`` begins
    state: TrainState  # the trainer's, before it drew step ``step``'s batch
    fixed: dict[str, torch.Tensor]  # an exported network's non-persistent buffers and constants (a session keeps them)
    inputs: torch.Tensor  # step ``step``'s batch
    targets: torch.Tensor
    criterion: dict[str, Any]


def before_step(client: redis.Redis, keys: Keys, tenant: str, job_id: str, step: int, start: int) -> StepState:
    """The job as it stood before ``step``, replayed from its checkpoint at ``start`` (0: the seeded start)."""
    job = keys.job(tenant, job_id)
    raw = [opt_bytes(v) for v in client.hmget(job, ["request", "network", "plan", "source_key"])]
    req = JobCreate.model_validate_json(required(raw[0], "the job's request"))
    spec = _network(client, keys.job_part(tenant, job_id, JobPart.INIT), required(raw[1], "the job's network"))
    plan: dict[str, Any] = json.loads(required(raw[2], "the job's plan"))
    device = choose_device(req.device, torch.cuda.is_available())
    # The replay records nothing and stops before the step: no captures, checkpoints or breakpoints.
    artifacts = shared_artifacts(get_settings())
    trainer = _build(
        client,
        artifacts,
        req,
        spec,
        plan,
        device,
        raw[3].decode() if raw[3] else None,
        total_steps=step - 1,
        gradients_every=0,
        graph=False,
        checkpoint_every=0,
        breakpoints=None,
        stop_on_nan=False,
    )
    if start > 0:
        blob = checkpoint_at(client, artifacts, keys, tenant, job_id, start)
        if blob is None:
            raise Conflict(f"the job's checkpoint at step {start} is gone (retention dropped it); try another step")
        trainer.load_state(unpack_train_state(blob))
    if trainer.step < step - 1:
        trainer.run(Hooks())
    trainer.net.train()
    state = trainer.state()
    inputs, targets = trainer.next_batch(trainer.data.x.shape[0])
    fixed = spec.built().fixed if isinstance(spec, _Exported) else {}
    criterion = req.criterion.model_dump(mode="json", exclude_unset=True)
    return StepState(trainer, state, fixed, inputs, targets, criterion)


def job_state_at(state: TrainState) -> bytes:
    """What a session keeps of the job's state at its step beside its own: the RNGs, the data order, the
    scheduler; weights and optimizer are the session's, which its calls may change."""
    empty: dict[str, Any] = {"state": {}, "param_groups": []}
    return pack_train_state(dataclasses.replace(state, model={}, optimizer=empty))


def continuation(s: LiveSession, job_state: bytes) -> Outcome:
    """The state a session continued as a job starts from: the session's weights and optimizer as they stand,
    the job's RNGs, data order and scheduler as they were at the step the session was opened at."""
    if s.optimizer is None:
        raise Conflict("this session has no optimizer to continue with")
    state = dataclasses.replace(
        unpack_train_state(job_state),
        model={k: v.detach().clone() for k, v in s.net.state_dict().items()},
        optimizer=s.optimizer.state_dict(),
    )
    return Outcome(pack_train_state(state), media=OCTET)
