"""A job's network with a checkpoint's weights as a file that runs without gradserve."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from api.deps import StoreDep, TenantDep
from api.job_submit import JobStoreDep, require_job
from api.listing import MAX_QUERY_INT
from api.offload import one_at_a_time, run_on_worker
from api.strict_json import StrictJsonRoute
from models.errors import NotFound
from models.nn.export import SUFFIX, ExportFormat

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictJsonRoute)


@router.get("/{job_id}/export", responses={200: {"content": {"application/octet-stream": {}}}})
async def export_job(
    job_id: str,
    jobs: JobStoreDep,
    tenant: TenantDep,
    store: StoreDep,
    request: Request,
    format: Annotated[
        ExportFormat, Query(description="torchscript (torch.jit.load), onnx (onnxruntime), pt2 (torch.export.load)")
    ],
    step: Annotated[
        int | None, Query(ge=0, le=MAX_QUERY_INT, description="A kept checkpoint; default the latest.")
    ] = None,
) -> Response:
    """Export the network with a checkpoint's weights (eval mode, CPU, free batch dimension); made once (by a
    session worker, named in ``X-Exported-By``), then kept."""
    doc = await require_job(jobs, tenant, job_id)
    step = doc.get("checkpoint_step") if step is None else step
    if step is None:
        raise NotFound(f"job '{job_id}' has no checkpoint yet")
    name = f"{format}:{step}"
    blob, made_by = await jobs.export_file(tenant=tenant, job_id=job_id, name=name), {}
    if blob is None:
        async with one_at_a_time(tenant, job_id, name):  # who waited for the same file finds it made
            blob = await jobs.export_file(tenant=tenant, job_id=job_id, name=name)
            if blob is None:
                kept = [c["step"] for c in await jobs.checkpoints(tenant=tenant, job_id=job_id)]
                if step not in kept:
                    shown = ", ".join(map(str, kept[-20:])) or "none"
                    raise NotFound(f"job '{job_id}' keeps no checkpoint at step {step}; kept steps: {shown}")
                call = {"kind": "export", "tenant": tenant, "job_id": job_id, "step": step, "format": format}
                made = await run_on_worker(
                    request.app.state.session_calls, store, f"{format} export", call, request.is_disconnected
                )
                made_by = {"X-Exported-By": made["worker"]}
                blob = await jobs.export_file(tenant=tenant, job_id=job_id, name=name)
                if blob is None:
                    raise NotFound(f"job '{job_id}''s {format} export at step {step} is gone (the job was deleted)")
    filename = f"{job_id}-{step}{SUFFIX[format]}"
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Checkpoint-Step": str(step),
            **made_by,
        },
    )
