"""Read-only views of a job for charts: metric series downsampled on the server, gradient statistics over steps."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import TenantDep
from api.downsample import keep_indices
from api.job_submit import JobStoreDep, require_job
from api.responses import TensorJSONResponse
from api.schemas.jobs import GradientHistoryPublic, SeriesPublic
from api.strict_json import StrictJsonRoute

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictJsonRoute)
_COLUMNS = ("step", "epoch", "loss", "lr", "samples_per_s", "t")
_STATS = ("norm", "mean", "std", "min", "max")


@router.get("/{job_id}/series", response_model=SeriesPublic, response_class=TensorJSONResponse)
async def get_series(
    job_id: str,
    jobs: JobStoreDep,
    tenant: TenantDep,
    points: Annotated[int, Query(ge=10, le=100_000, description="At most this many points per column.")] = 1000,
) -> Any:
    """The metric columns of ``/metrics``, downsampled to at most ``points`` steps (each bucket's lowest and
    highest loss kept, and the first and last step), for charts of long or many runs."""
    await require_job(jobs, tenant, job_id)
    records = await jobs.metric_records(tenant=tenant, job_id=job_id, since=None)
    kept = [records[i] for i in keep_indices([r.get("loss") for r in records], points)]
    body: dict[str, Any] = {name: [r.get(name) for r in kept] for name in _COLUMNS}
    if any("accuracy" in r for r in kept):
        body["accuracy"] = [r.get("accuracy") for r in kept]
    evals = [r for r in records if "val_loss" in r]
    evals = [evals[i] for i in keep_indices([r["val_loss"] for r in evals], points)]
    body["eval"] = {"step": [r["step"] for r in evals], "val_loss": [r["val_loss"] for r in evals]}
    if any("val_accuracy" in r for r in evals):
        body["eval"]["val_accuracy"] = [r.get("val_accuracy") for r in evals]
    body.update(id=job_id, count=len(records), points=len(kept), last_step=records[-1]["step"] if records else 0)
    return TensorJSONResponse(body)


@router.get("/{job_id}/gradients/history", response_model=GradientHistoryPublic)
async def get_gradient_history(job_id: str, jobs: JobStoreDep, tenant: TenantDep) -> dict[str, Any]:
    """Norm, mean, std, min and max of every parameter's gradient at every captured step, as columns."""
    await require_job(jobs, tenant, job_id)
    by_step = await jobs.all_gradient_stats(tenant=tenant, job_id=job_id)
    steps = sorted(by_step)
    shapes: dict[str, list[int]] = {}
    for step in steps:
        shapes.update({name: stat["shape"] for name, stat in by_step[step].items()})
    parameters = {
        name: {"shape": shape, **{k: [by_step[s].get(name, {}).get(k) for s in steps] for k in _STATS}}
        for name, shape in shapes.items()
    }
    return {"steps": steps, "parameters": parameters}
