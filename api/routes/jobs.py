"""Training jobs: submit, read, list, cancel, metrics and live events (server-sent events)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, status
from fastapi.responses import StreamingResponse

from api.deps import SettingsDep, TenantDep
from api.finite import null_fields
from api.job_queue import place_in_line
from api.job_submit import JobStoreDep, SubmitterDep, require_job
from api.listing import MAX_QUERY_INT, PagingDep, page_of
from api.responses import TensorJSONResponse
from api.schemas.jobs import CancelPublic, JobPublic, JobsPublic, JobStatus, JobSubmitted, MetricsPublic
from api.strict_json import StrictJsonRoute
from gradserve.protocol.sse import KEEPALIVE, encode_event, retry_field
from gradserve.protocol.states import JOB_STOPPED
from models.errors import Conflict, InvalidInput, NotFound
from models.spec.job import JobCreate
from models.spec.network import LENET_EXAMPLE
from models.store.jobs import JobStore
from models.tasks import broker_queue_key

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=StrictJsonRoute)

DIGITS_EXAMPLE = {
    "network": LENET_EXAMPLE,
    "dataset": {"source": "digits", "image_size": 32},
    "criterion": {"type": "CrossEntropyLoss"},
    "optimizer": {"type": "SGD", "lr": 0.05, "momentum": 0.9},
    "batch_size": 32,
    "epochs": 3,
    "seed": 0,
    "capture": {"checkpoint_every": 100},
}
STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
KEEPALIVE_MS = 10_000
_COLUMNS = ("step", "epoch", "loss", "lr", "samples_per_s", "t")
JOB_NUMBERS = ("loss", "accuracy", "val_loss", "val_accuracy", "samples_per_s", "overall_samples_per_s")


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobSubmitted)
async def create_job(
    req: JobCreate = Body(openapi_examples={"digits": {"summary": "LeNet on digits", "value": DIGITS_EXAMPLE}}),
    *,
    submitter: SubmitterDep,
) -> dict[str, Any]:
    """Check a training job against its network and the limits, and queue it."""
    return {"id": await submitter.submit(req), "status": "queued"}


@router.get("", response_model=JobsPublic)
async def list_jobs(
    jobs: JobStoreDep,
    tenant: TenantDep,
    status: JobStatus | None = None,
    name: Annotated[str | None, Query(max_length=200, description="Only jobs of this name.")] = None,
    tag: Annotated[list[str] | None, Query(description="Only jobs carrying this tag (repeat: all of them).")] = None,
    *,
    paging: PagingDep,
) -> dict[str, Any]:
    """The tenant's jobs, newest first, filtered by status, name and tags; ``total`` counts every match."""
    data, total = await jobs.list_jobs(
        tenant=tenant, status=status, name=name, tags=tag or [], offset=paging.offset, limit=paging.limit
    )
    return page_of([null_fields(d, JOB_NUMBERS) for d in data], total, paging.offset)


@router.get("/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, jobs: JobStoreDep, tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    """A job's status and progress."""
    doc = await jobs.get_job(tenant=tenant, job_id=job_id, with_request=True)
    if doc is None:
        raise NotFound(f"job '{job_id}' not found")
    if doc["status"] == "running":
        doc["cancel_requested"] = await jobs.cancel_requested(tenant=tenant, job_id=job_id)
    if doc["status"] == "queued" and doc.get("queue"):
        doc["queue_position"] = await place_in_line(jobs.redis, broker_queue_key(settings, doc["queue"]), job_id)
    return null_fields(doc, JOB_NUMBERS)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_job(job_id: str, jobs: JobStoreDep, tenant: TenantDep) -> None:
    """Delete an ended job and everything it owns (metrics, checkpoints, captures, exports)."""
    result = await jobs.delete(tenant=tenant, job_id=job_id)
    if result == "missing":
        raise NotFound(f"job '{job_id}' not found")
    if result.startswith("busy:"):
        raise Conflict(f"job '{job_id}' is {result.removeprefix('busy:')}: cancel it first (POST .../cancel)")


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=CancelPublic)
async def cancel_job(job_id: str, jobs: JobStoreDep, tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    """Cancel a queued job now, or ask its worker to stop after the current step (a checkpoint is kept)."""
    result = await jobs.cancel(
        tenant=tenant, job_id=job_id, ttl_s=settings.job_ttl_s, max_records=settings.job_max_records
    )
    if result == "missing":
        raise NotFound(f"job '{job_id}' not found")
    if result.startswith("ended:"):
        raise Conflict(f"job '{job_id}' has already ended ({result.removeprefix('ended:')})")
    # The status GET and the filters show: still running until the worker stops, with the request noted.
    if result == "cancelling":
        return {"id": job_id, "status": "running", "cancel_requested": True}
    return {"id": job_id, "status": result, "cancel_requested": True}


@router.get("/{job_id}/metrics", response_model=MetricsPublic, response_class=TensorJSONResponse)
async def get_metrics(
    job_id: str,
    jobs: JobStoreDep,
    tenant: TenantDep,
    since: Annotated[
        int | None, Query(ge=0, le=MAX_QUERY_INT, description="Only steps after this one (for polling).")
    ] = None,
) -> Any:
    """Per-step loss, learning rate, throughput (and accuracy) as columns."""
    await require_job(jobs, tenant, job_id)
    records = await jobs.metric_records(tenant=tenant, job_id=job_id, since=since)
    body: dict[str, Any] = {name: [r.get(name) for r in records] for name in _COLUMNS}
    if any("accuracy" in r for r in records):
        body["accuracy"] = [r.get("accuracy") for r in records]
    evals = [r for r in records if "val_loss" in r]
    body["eval"] = {"step": [r["step"] for r in evals], "val_loss": [r["val_loss"] for r in evals]}
    if any("val_accuracy" in r for r in evals):
        body["eval"]["val_accuracy"] = [r.get("val_accuracy") for r in evals]
    body["non_finite"] = [
        {"step": r["step"], "column": name, "value": value}
        for r in records
        for name, value in r.get("non_finite", {}).items()
    ]
    body["count"] = len(records)
    body["last_step"] = records[-1]["step"] if records else (since or 0)
    return TensorJSONResponse(body)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}},
)
async def job_events(
    job_id: str,
    jobs: JobStoreDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header(description="Resume after this event id.")] = None,
    after: Annotated[str | None, Query(description="Same as the Last-Event-ID header.")] = None,
) -> StreamingResponse:
    """Every metric record (``event: metric``) and state change (``event: state``) as server-sent events,
    ending with the final state. Reconnect with ``Last-Event-ID`` to continue exactly where you left off."""
    await require_job(jobs, tenant, job_id)
    start = last_event_id or after or "0-0"
    match = STREAM_ID.match(start)
    # Each part is a 64-bit number to Redis; a bigger one failed the stream after its 200 went out.
    if not match or any(int(part) >= 2**64 for part in match.groups()):
        raise InvalidInput(
            "an event id looks like '1712345678901-0' (two numbers below 2**64)",
            ("header" if last_event_id else "query", "last-event-id" if last_event_id else "after"),
        )
    return StreamingResponse(
        _stream(jobs, tenant, job_id, start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(jobs: JobStore, tenant: str, job_id: str, cursor: str) -> AsyncIterator[bytes]:
    yield retry_field()
    while True:
        ended = (await jobs.status(tenant=tenant, job_id=job_id)) in JOB_STOPPED | {None}
        # Once the job has ended nothing more can come, so read what is left without waiting.
        entries = await jobs.events(tenant=tenant, job_id=job_id, after=cursor, block_ms=0 if ended else KEEPALIVE_MS)
        if not entries:
            if ended:
                return
            yield KEEPALIVE
            continue
        for entry_id, kind, data in entries:
            cursor = entry_id
            yield encode_event(entry_id, kind, data)
            # A stopped state ends the stream only as the latest event: a pause the job was resumed from
            # is followed by its later states (and a watcher that stopped there saw the wrong end).
            stopped = kind == "state" and json.loads(data).get("status") in JOB_STOPPED
            if stopped and not await jobs.events(tenant=tenant, job_id=job_id, after=cursor, block_ms=0):
                return
