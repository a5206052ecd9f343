"""A job's network with a checkpoint's weights as a file that runs without gradserve."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import torch
from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from api.deps import SettingsDep, TenantDep
from api.job_submit import JobStoreDep, checkpoint_state, require_job
from api.listing import MAX_QUERY_INT
from api.strict_json import StrictJsonRoute
from models.errors import NotFound, ServiceUnavailable
from models.nn.export import SUFFIX, ExportFormat, export_module, export_network
from models.nn.exported_admit import build_stored
from models.nn.state_codec import unpack_train_state
from models.spec.network import NetworkSpec
from models.store.jobs import JobStore
from models.wire.tensors import DTYPES, from_safetensors

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictJsonRoute)
# Exports of this process, one at a time (torch's exporters are not thread-safe, models.nn.export): a
# request waiting its turn first looks whether the one before made its file.
_TURN = asyncio.Lock()


@router.get("/{job_id}/export", responses={200: {"content": {"application/octet-stream": {}}}})
async def export_job(
    job_id: str,
    jobs: JobStoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
    format: Annotated[
        ExportFormat, Query(description="torchscript (torch.jit.load), onnx (onnxruntime), pt2 (torch.export.load)")
    ],
    step: Annotated[
        int | None, Query(ge=0, le=MAX_QUERY_INT, description="A kept checkpoint; default the latest.")
    ] = None,
) -> Response:
    """Export the network with a checkpoint's weights (eval mode, CPU, free batch dimension); made once, then kept."""
    doc = await require_job(jobs, tenant, job_id)
    step = doc.get("checkpoint_step") if step is None else step
    if step is None:
        raise NotFound(f"job '{job_id}' has no checkpoint yet")
    name = f"{format}:{step}"
    blob = await jobs.export_file(tenant=tenant, job_id=job_id, name=name)
    if blob is None:
        async with _TURN:  # one export at a time; who waited for the same file finds it made
            blob = await _made(jobs, tenant, job_id, name, step, format, settings.job_ttl_s)
    filename = f"{job_id}-{step}{SUFFIX[format]}"
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Checkpoint-Step": str(step)},
    )


async def _made(jobs: JobStore, tenant: str, job_id: str, name: str, step: int, fmt: ExportFormat, ttl_s: int) -> bytes:
    """The export file ``name``: kept from an earlier request, or made now and kept."""
    blob = await jobs.export_file(tenant=tenant, job_id=job_id, name=name)
    if blob is not None:
        return blob
    state = await checkpoint_state(jobs, tenant, job_id, step)
    raw = await jobs.raw_field(tenant=tenant, job_id=job_id, name="network") or b"{}"
    if json.loads(raw).get("format") == "export":
        init = await jobs.init_parts(tenant=tenant, job_id=job_id)
        blob = await run_in_threadpool(_export_program, raw, init, state, fmt)
    else:
        blob = await run_in_threadpool(_export, NetworkSpec.model_validate_json(raw), state, fmt)
    await jobs.put_export(tenant=tenant, job_id=job_id, name=name, blob=blob, ttl_s=ttl_s)
    return blob


def _export(spec: NetworkSpec, state: bytes, fmt: ExportFormat) -> bytes:
    with _export_extra(fmt):
        return export_network(spec, unpack_train_state(state).model, fmt)


def _export_program(network: bytes, init: dict[str, bytes], state: bytes, fmt: ExportFormat) -> bytes:
    """An exported network's job: its programs and fixed tensors from the job's INIT, the checkpoint's weights."""
    doc = json.loads(network)
    meta = {"form": doc["form"], "programs": {m: init[f"{m}_program"].decode() for m in doc["modes"]}}
    built = build_stored(meta, from_safetensors(init["weights"], loc=("network", "weights")))
    built.net.load_state_dict(unpack_train_state(state).model)
    first = built.form.inputs[0]
    with _export_extra(fmt):
        return export_module(built.net, torch.zeros((2, *first.example), dtype=DTYPES[first.dtype]), fmt)


@contextmanager
def _export_extra(fmt: ExportFormat) -> Iterator[None]:
    try:
        yield
    except ImportError as exc:  # onnx/onnxscript are an extra: gradserve[export]
        raise ServiceUnavailable(
            f"{fmt} export needs {exc.name} on the API host: pip install 'gradserve[export]'"
        ) from exc
