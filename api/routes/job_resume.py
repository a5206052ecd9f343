"""Resuming a job that a breakpoint paused: at the step it paused on, with changes or without."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Body, status
from fastapi.concurrency import run_in_threadpool
from kombu.exceptions import OperationalError

from api.job_submit import SubmitterDep
from api.schemas.jobs import ResumePublic
from api.strict_json import StrictJsonRoute
from models.errors import Conflict, NotFound, TooManyRequests
from models.spec.job import ResumeCreate
from models.tasks import JOB_RUN

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictJsonRoute)


@router.post(
    "/{job_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ResumePublic,
    responses={404: {"description": "No such job"}, 409: {"description": "Not paused"}, 429: {"description": "Quota"}},
)
async def resume_job(
    job_id: str,
    body: ResumeCreate = Body(
        default=ResumeCreate(),
        openapi_examples={
            "as it was": {"summary": "Run the paused step again, as it was", "value": {}},
            "lower lr": {"summary": "With a lower learning rate", "value": {"changes": {"lr": 0.001}}},
            "skip": {"summary": "Leave the paused step's batch out", "value": {"changes": {"skip_batch": True}}},
            "new rules": {
                "summary": "Pause only above a higher gradient norm from here on",
                "value": {"changes": {"breakpoints": {"nonfinite": True, "grad_norm_above": 50.0}}},
            },
        },
    ),
    *,
    submitter: SubmitterDep,
) -> dict[str, Any]:
    """Queue a paused job again; it goes on from the step it paused on (its update was never applied)."""
    jobs, tenant, settings = submitter.jobs, submitter.tenant, submitter.settings
    changes = body.changes.model_dump(mode="json", exclude_defaults=True)
    request = None
    if "breakpoints" in body.changes.model_fields_set:  # the rules live in the request every run starts from
        changes["breakpoints"] = body.changes.model_dump(mode="json", include={"breakpoints"})["breakpoints"]
        stored = await jobs.raw_field(tenant=tenant, job_id=job_id, name="request")
        if stored is None:
            raise NotFound(f"job '{job_id}' not found")
        doc = json.loads(stored)  # as submitted (an inline dataset's data kept apart), so edited, not rebuilt
        doc.pop("breakpoints", None)
        if changes["breakpoints"] is not None:
            doc["breakpoints"] = changes["breakpoints"]
        request = json.dumps(doc)
    result = await jobs.resume(
        tenant=tenant,
        job_id=job_id,
        changes=changes,
        request=request,
        max_concurrent=settings.max_concurrent_jobs,
        ttl_s=settings.job_ttl_s,
        max_records=settings.job_max_records,
    )
    if result == "missing":
        raise NotFound(f"job '{job_id}' not found")
    if result.startswith("not:"):
        raise Conflict(f"job '{job_id}' is {result.removeprefix('not:')}, not paused: only a paused job resumes")
    if result.startswith("busy:"):
        raise TooManyRequests(
            f"{result.removeprefix('busy:')} jobs are queued or running, the limit "
            f"(GRADSERVE_MAX_CONCURRENT_JOBS is {settings.max_concurrent_jobs}); resume it when one ends"
        )
    doc = await jobs.get_job(tenant=tenant, job_id=job_id)
    queue = (doc or {}).get("queue") or ""
    try:  # a distinct task id: the job's earlier runs' ids are spent
        task_id = f"{job_id}-resume-{time.time_ns()}"
        await run_in_threadpool(
            submitter.celery.send_task, JOB_RUN, args=[tenant, job_id], queue=queue, task_id=task_id
        )
    except OperationalError:  # it is queued in Redis: the workers' reaper sends it once it sees it unclaimed
        pass
    return {"id": job_id, "status": "queued", "changes": changes}
