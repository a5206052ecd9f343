"""Forks: a new job that starts from one of a job's checkpoints, with changes, keeping its history up to there."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, status

from api.forks import plan_fork
from api.job_submit import SubmitterDep, checkpoint_state, require_job
from api.schemas.jobs import JobSubmitted
from api.strict_json import StrictJsonRoute
from models.spec.job import ForkCreate

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictJsonRoute)


@router.post("/{job_id}/fork", status_code=status.HTTP_202_ACCEPTED, response_model=JobSubmitted)
async def fork_job(
    job_id: str,
    body: ForkCreate = Body(
        openapi_examples={
            "new lr": {"summary": "From step 100 with lr 0.01", "value": {"step": 100, "changes": {"lr": 0.01}}}
        }
    ),
    *,
    submitter: SubmitterDep,
) -> dict[str, Any]:
    """Start a job from checkpoint ``step`` of this one with ``changes``; with none it repeats the parent exactly."""
    jobs, tenant = submitter.jobs, submitter.tenant
    await require_job(jobs, tenant, job_id)
    state = await checkpoint_state(jobs, tenant, job_id, body.step)
    req, fork = await plan_fork(jobs, tenant, job_id, body.step, body.changes, state)
    return {"id": await submitter.submit(req, fork), "status": "queued"}
