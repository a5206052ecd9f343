"""Fork planning: the child request and start a fork needs, from its parent's request and a state.

Two ways in share it: a fork of a job at one of its checkpoints (``POST /v1/jobs/{id}/fork``) and a
session opened at a job's step and continued as a job (``POST /v1/sessions/{id}/jobs``), whose state is
the session's weights and optimizer with the job's RNG, scheduler and data order at that step.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from api.job_submit import ForkStart
from models.errors import InvalidInput
from models.nn.job_network import ExportedNetwork
from models.spec.job import ForkChanges, JobCreate
from models.spec.optimizers import OptimizerSpec
from models.store.jobs import JobStore
from models.store.keys import JobPart

_OPTIMIZER: TypeAdapter[Any] = TypeAdapter(OptimizerSpec)


async def plan_fork(
    jobs: JobStore,
    tenant: str,
    job_id: str,
    step: int,
    changes: ForkChanges,
    state: bytes,
    *,
    session: str | None = None,
) -> tuple[JobCreate, ForkStart]:
    """The child of ``job_id`` that starts at ``step`` from ``state`` with ``changes``; with none it repeats
    the parent exactly. ``session``: the session the state came from, kept in the child's lineage."""
    parent = json.loads(await jobs.raw_field(tenant=tenant, job_id=job_id, name="request") or b"{}")
    network = json.loads(await jobs.raw_field(tenant=tenant, job_id=job_id, name="network") or b"{}")
    exported = None
    if network.get("format") == "export":  # the parent's programs and initial weights, in its own INIT hash
        exported = ExportedNetwork.from_stored(json.dumps(network), jobs.part(tenant, job_id, JobPart.INIT))
        doc = {**parent, "network_id": exported.network_id or job_id}
        doc.pop("network", None)
    else:
        doc = {**parent, "network": network}
        doc.pop("network_id", None)  # the spec the parent ran, even if that network has since gone
    given = changes.model_dump(mode="json", exclude_unset=True)
    if "lr" in given:
        doc["optimizer"] = {**parent["optimizer"], "lr": given.pop("lr")}
    if "epochs" in given or "steps" in given:
        doc.pop("epochs", None)
        doc.pop("steps", None)
    if "tags" not in given:  # a fork of a sweep's trial is not one of its trials
        doc["tags"] = [t for t in parent.get("tags", []) if not t.startswith("sweep=")]
    doc.update(given)
    if doc.get("lr_scheduler") is None:
        doc.pop("lr_scheduler", None)
    req = _as_request(doc)
    policy = _policy(parent, req, "dataset" in given)
    data = None
    if req.dataset.source == "inline" and "dataset" not in given:
        data = await _parent_data(jobs, tenant, job_id)

    def check(plan: dict[str, Any]) -> None:
        if plan["total_steps"] <= step:
            raise InvalidInput(
                f"the fork would run {plan['total_steps']} steps in all, not beyond its start at step {step}: "
                "give more epochs or steps in changes",
                ("body", "changes", "steps" if req.steps is not None else "epochs"),
            )

    history = [r for r in await jobs.metric_records(tenant=tenant, job_id=job_id, since=None) if r["step"] <= step]
    return req, ForkStart(job_id, step, state, policy, history, data, check, exported, session)


def _as_request(doc: dict[str, Any]) -> JobCreate:
    """The child's request; what the changes made of the parent's is refused as the changes' fault."""
    try:
        return JobCreate.model_validate(doc)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", "changes", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


def _policy(parent: dict[str, Any], child: JobCreate, new_data: bool) -> dict[str, Any]:
    """What of the parent's state carries over (worker.fork.start_fork applies it)."""
    before = _OPTIMIZER.validate_python(parent["optimizer"]).model_dump(mode="json")
    after = child.optimizer.model_dump(mode="json")
    same_type = before["type"] == after["type"]
    overrides = {k: v for k, v in after.items() if same_type and before.get(k) != v}
    old_sched = parent.get("lr_scheduler")
    new_sched = None if child.lr_scheduler is None else child.lr_scheduler.model_dump(mode="json", exclude_unset=True)
    keep_sched = same_type and old_sched == new_sched
    return {
        "optimizer": "keep" if same_type else "fresh",
        "overrides": overrides,
        "scheduler": "keep" if keep_sched else "fresh",
        "data": "fresh" if new_data else "keep",
    }


async def _parent_data(jobs: JobStore, tenant: str, job_id: str) -> bytes:
    blob = await jobs.inline_data(tenant=tenant, job_id=job_id)
    if blob is None:
        raise InvalidInput(f"job '{job_id}''s inline dataset has expired; give changes.dataset", ("body", "changes"))
    return blob
