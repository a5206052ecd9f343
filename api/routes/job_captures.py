"""What a job captured: gradient snapshots, the autograd graph of its first step, its checkpoints by step."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from api.deps import TenantDep
from api.finite import null_fields
from api.job_submit import JobStoreDep, checkpoint_state, require_job
from api.listing import MAX_QUERY_INT
from api.schemas.jobs import CheckpointsPublic, GradientsPublic
from api.strict_json import StrictJsonRoute
from models.errors import NotFound
from models.nn.state_codec import weights_of

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictJsonRoute)
SAFETENSORS = "application/octet-stream"


@router.get(
    "/{job_id}/gradients",
    response_model=GradientsPublic,
    responses={200: {"content": {SAFETENSORS: {}}, "description": "with format=safetensors"}},
)
async def get_gradients(
    job_id: str,
    jobs: JobStoreDep,
    tenant: TenantDep,
    step: Annotated[
        int | None, Query(ge=1, le=MAX_QUERY_INT, description="A captured step; default the latest.")
    ] = None,
    format: Literal["json", "safetensors"] = "json",
) -> Any:
    """Per-parameter norm, mean, std, min and max of the gradients at a step, or the tensors themselves."""
    await require_job(jobs, tenant, job_id)
    steps = await jobs.gradient_steps(tenant=tenant, job_id=job_id)
    if step is None:
        if not steps:
            return {"step": None, "steps": [], "parameters": {}}
        step = steps[-1]
    if step not in steps:
        shown = ", ".join(map(str, steps[:20])) + (" ..." if len(steps) > 20 else "")
        raise NotFound(
            f"no gradient snapshot at step {step}; captured steps: {shown or 'none'} (set capture.gradients_every)"
        )
    if format == "safetensors":
        blob = await jobs.gradient_file(tenant=tenant, job_id=job_id, step=step)
        if blob is None:
            raise NotFound(f"the gradient tensors of step {step} have expired")
        disposition = f'attachment; filename="{job_id}-grads-{step}.safetensors"'
        return Response(blob, media_type=SAFETENSORS, headers={"Content-Disposition": disposition})
    stats = await jobs.gradient_stats(tenant=tenant, job_id=job_id, step=step) or {}
    parameters = {k: null_fields(v, ("norm", "mean", "std", "min", "max")) for k, v in stats.items()}
    return {"step": step, "steps": steps, "parameters": parameters}


@router.get("/{job_id}/graph", responses={200: {"content": {"text/vnd.graphviz": {}, "image/svg+xml": {}}}})
async def get_graph(
    job_id: str, jobs: JobStoreDep, tenant: TenantDep, format: Literal["json", "dot", "svg"] = "json"
) -> Any:
    """The autograd graph of the job's first step: JSON nodes and edges, Graphviz source or SVG."""
    await require_job(jobs, tenant, job_id)
    graph = await jobs.graph(tenant=tenant, job_id=job_id)
    if graph is None:
        raise NotFound(f"job '{job_id}' has no graph yet (it is captured at step 1 when capture.graph is true)")
    if format == "json":
        return graph
    from models.nn.graph import to_dot, to_svg

    dot = to_dot(graph, title=job_id)
    if format == "dot":
        return Response(dot, media_type="text/vnd.graphviz")
    return Response(await run_in_threadpool(to_svg, dot), media_type="image/svg+xml")


@router.get("/{job_id}/checkpoints", response_model=CheckpointsPublic)
async def list_checkpoints(job_id: str, jobs: JobStoreDep, tenant: TenantDep) -> dict[str, Any]:
    """Every checkpoint the job keeps (GRADSERVE_CHECKPOINT_KEEP_LAST / _KEEP_EVERY), in step order."""
    await require_job(jobs, tenant, job_id)
    data = await jobs.checkpoints(tenant=tenant, job_id=job_id)
    return {"data": data, "count": len(data), "total": len(data)}


@router.get("/{job_id}/checkpoint", responses={200: {"content": {SAFETENSORS: {}}}})
async def get_checkpoint(
    job_id: str,
    jobs: JobStoreDep,
    tenant: TenantDep,
    step: Annotated[
        int | None, Query(ge=0, le=MAX_QUERY_INT, description="A kept checkpoint; default the latest.")
    ] = None,
) -> Response:
    """A checkpoint's state_dict as safetensors (``safetensors.torch.load`` + ``load_state_dict``)."""
    doc = await require_job(jobs, tenant, job_id)
    if step is None:
        step = doc.get("checkpoint_step")
        if step is None:
            raise NotFound(f"job '{job_id}' has no checkpoint yet")
    blob = await run_in_threadpool(weights_of, await checkpoint_state(jobs, tenant, job_id, step))
    headers = {
        "Content-Disposition": f'attachment; filename="{job_id}-{step}.safetensors"',
        "X-Checkpoint-Step": str(step if step is not None else ""),
    }
    return Response(blob, media_type=SAFETENSORS, headers=headers)
