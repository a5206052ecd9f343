"""TensorBoard export of a job: its scalars per step and gradient histograms as event files in a tar.gz."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.deps import StoreDep, TenantDep
from api.job_submit import JobStoreDep, require_job
from api.offload import run_on_worker
from api.strict_json import StrictJsonRoute

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictJsonRoute)
GZIP = "application/gzip"


@router.get("/{job_id}/tensorboard", responses={200: {"content": {GZIP: {}}, "description": "A tar.gz archive"}})
async def get_tensorboard(
    job_id: str, jobs: JobStoreDep, tenant: TenantDep, store: StoreDep, request: Request
) -> Response:
    """The job's scalars (every step) and gradient histograms (captured steps) as TensorBoard event files
    in a tar.gz: unpack it and run ``tensorboard --logdir .``. Made by a session worker (``X-Exported-By``)."""
    await require_job(jobs, tenant, job_id)
    call = {"kind": "tensorboard", "tenant": tenant, "job_id": job_id}
    made = await run_on_worker(
        request.app.state.session_calls, store, "TensorBoard archive", call, request.is_disconnected
    )
    body = await jobs.take_archive(made["ref"])
    disposition = f'attachment; filename="{job_id}-tensorboard.tar.gz"'
    headers = {"Content-Disposition": disposition, "X-Exported-By": made["worker"]}
    return Response(body, media_type=GZIP, headers=headers)
