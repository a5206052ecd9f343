"""TensorBoard export of a job: its scalars per step and gradient histograms as event files in a tar.gz."""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from safetensors.torch import load as st_load

from api.deps import TenantDep
from api.downsample import as_float
from api.job_submit import JobStoreDep, require_job
from api.strict_json import StrictJsonRoute
from models.wire import tensorboard
from models.wire.tensorboard import Value

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictJsonRoute)
GZIP = "application/gzip"
# Record field -> TensorBoard tag; train/ and eval/ become two groups of charts.
SCALARS = {
    "loss": "train/loss",
    "accuracy": "train/accuracy",
    "lr": "train/lr",
    "samples_per_s": "train/samples_per_s",
    "val_loss": "eval/loss",
    "val_accuracy": "eval/accuracy",
}


def event_file(records: list[dict[str, Any]], gradients: dict[int, bytes], started: float) -> bytes:
    """Every record as one event of its step's scalars; each gradient snapshot as one event of histograms."""
    walls = {r["step"]: float(r.get("t") or started) for r in records}
    steps: list[tuple[int, float, dict[str, Value]]] = [
        (r["step"], walls[r["step"]], {tag: as_float(r[k]) for k, tag in SCALARS.items() if k in r}) for r in records
    ]
    for step, blob in sorted(gradients.items()):
        histograms: dict[str, Value] = {
            f"gradients/{name}": t.detach().double().numpy() for name, t in st_load(blob).items()
        }
        steps.append((step, walls.get(step, started), histograms))
    return tensorboard.event_file(steps)


def archive(job_id: str, events: bytes, started: float) -> bytes:
    """A tar.gz holding ``<job_id>/events.out.tfevents.<time>.gradserve``: ``tensorboard --logdir`` on the
    unpacked folder shows the job as one run."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{job_id}/events.out.tfevents.{int(started)}.gradserve")
        info.size, info.mtime = len(events), int(time.time())
        tar.addfile(info, io.BytesIO(events))
    return buffer.getvalue()


@router.get("/{job_id}/tensorboard", responses={200: {"content": {GZIP: {}}, "description": "A tar.gz archive"}})
async def get_tensorboard(job_id: str, jobs: JobStoreDep, tenant: TenantDep) -> Response:
    """The job's scalars (every step) and gradient histograms (captured steps) as TensorBoard event files
    in a tar.gz: unpack it and run ``tensorboard --logdir .``."""
    doc = await require_job(jobs, tenant, job_id)
    records = await jobs.metric_records(tenant=tenant, job_id=job_id, since=None)
    gradients: dict[int, bytes] = {}
    for step in await jobs.gradient_steps(tenant=tenant, job_id=job_id):
        blob = await jobs.gradient_file(tenant=tenant, job_id=job_id, step=step)
        if blob is not None:
            gradients[step] = blob
    started = float(doc.get("started_at") or doc.get("created_at") or time.time())
    events = await run_in_threadpool(event_file, records, gradients, started)
    body = await run_in_threadpool(archive, job_id, events, started)
    disposition = f'attachment; filename="{job_id}-tensorboard.tar.gz"'
    return Response(body, media_type=GZIP, headers={"Content-Disposition": disposition})
