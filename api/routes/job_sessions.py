"""A live session at any step of a job: the job's exact state before that step, with the step's batch loaded.

The worker rebuilds it from the nearest kept checkpoint at or before the step (or the job's seeded start)
and replays the steps between, as the job ran them; so the replay is at most ``checkpoint_every`` steps
of a job that keeps checkpoints, and never more than GRADSERVE_MAX_REPLAY_STEPS.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response, status

from api.deps import SettingsDep, TenantDep
from api.forks import plan_fork
from api.job_submit import JobStoreDep, SubmitterDep, require_job
from api.listing import MAX_QUERY_INT
from api.responses import TensorJSONResponse
from api.routes.sessions import context, forget_session, start_from_job
from api.schemas import sessions as S
from api.schemas.jobs import JobSubmitted
from api.strict_json import StrictJsonRoute
from models.errors import Conflict, InvalidInput, NotFound
from models.nn.job_network import ExportedNetwork
from models.settings import Settings
from models.spec.job import JobCreate, JobSessionCreate, SessionJobCreate
from models.spec.network import NetworkSpec
from models.store.jobs import JobStore
from models.store.keys import JobPart
from models.store.redis import Store
from models.store.replies import opt_bytes
from models.wire.session import OCTET
from models.wire.tensors import encode, from_safetensors, safetensors_metadata

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
MAX_LAYERS = 64
MAX_BINS = 256
batch_router = APIRouter(prefix="/v1/sessions", tags=["sessions"], route_class=StrictJsonRoute)


@router.post(
    "/{job_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    response_class=Response,
    responses={201: {"model": S.SessionPublic}, 404: {"description": "No such job"}, 409: {"description": "Not here"}},
)
async def session_at_step(
    job_id: str,
    request: Request,
    jobs: JobStoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
    body: JobSessionCreate = Body(default=JobSessionCreate()),
) -> Response:
    """Open the job at ``step`` (default: the step a breakpoint paused it on): forward its batch, take the
    job's loss and backward, and the loss and gradients are the job's at that step, bit for bit."""
    doc = await require_job(jobs, tenant, job_id)
    paused_at = (doc.get("breakpoint") or {}).get("step") if doc["status"] == "paused" else None
    step = body.step if body.step is not None else paused_at
    if step is None:
        raise InvalidInput("give the step to open the job at (only a paused job has a default)", ("body", "step"))
    response, _ = await _open(request, jobs, tenant, settings, doc, step, body.device)
    return response


async def _open(
    request: Request, jobs: JobStore, tenant: str, settings: Settings, doc: dict[str, Any], step: int, device: str
) -> tuple[Response, JobCreate]:
    """Build the session at ``step`` of the job ``doc``; the answer, and the job's request."""
    job_id = doc["id"]
    reached = int(doc.get("step") or 0)
    if step > reached + 1:
        raise Conflict(f"job '{job_id}' has taken {reached} steps: it can be opened at steps 1 to {reached + 1}")
    raw = [await jobs.raw_field(tenant=tenant, job_id=job_id, name=n) for n in ("network", "request")]
    network = json.loads(raw[0] or b"{}")
    req = JobCreate.model_validate_json(raw[1] or b"{}")
    if req.accumulate_grad_batches > 1:
        raise Conflict("a job that accumulates gradients cannot be opened at a step yet: its step is several batches")
    kept = [c["step"] for c in await jobs.checkpoints(tenant=tenant, job_id=job_id)]
    start = max((c for c in kept if c <= step - 1), default=0)
    if step - 1 - start > settings.max_replay_steps:
        raise Conflict(
            f"opening step {step} would replay {step - 1 - start:,} steps from the nearest checkpoint (step {start}); "
            f"the limit is {settings.max_replay_steps:,} (GRADSERVE_MAX_REPLAY_STEPS): submit jobs with "
            "capture.checkpoint_every to open them anywhere"
        )
    from_job: dict[str, Any] = {"job_id": job_id, "step": step, "start": start}
    if network.get("format") == "export":  # its programs and initial weights, in the job's INIT hash
        exported = ExportedNetwork.from_stored(raw[0] or b"{}", jobs.part(tenant, job_id, JobPart.INIT))
        create = S.SessionCreate(
            network_id=exported.network_id or job_id, seed=req.seed, device=device, optimizer=req.optimizer
        )
        return await start_from_job(request, create, exported.network_id, from_job, exported), req
    create = S.SessionCreate(
        network=NetworkSpec.model_validate(network), seed=req.seed, device=device, optimizer=req.optimizer
    )
    return await start_from_job(request, create, doc.get("network_id"), from_job), req


@router.get(
    "/{job_id}/activations",
    responses={200: {"content": {OCTET: {}}, "description": "with format=safetensors"}, 404: {}, 409: {}},
)
async def job_activations(
    job_id: str,
    request: Request,
    jobs: JobStoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
    step: Annotated[int, Query(ge=1, le=MAX_QUERY_INT)],
    layers: Annotated[str, Query(min_length=1, max_length=2000, description="Module names, comma-separated.")],
    format: Literal["json", "safetensors"] = "json",
    bins: Annotated[int, Query(ge=1, le=MAX_BINS)] = 20,
) -> Response:
    """Each layer's output and the gradient that came back into it at ``step``: statistics and a histogram
    (or the tensors, ``format=safetensors``), replayed from the nearest checkpoint; nothing is captured while
    the job trains. Answers are kept with the job, so asking again costs nothing."""
    names = [n for n in layers.split(",") if n]
    if not names or len(names) > MAX_LAYERS:
        raise InvalidInput(f"give 1 to {MAX_LAYERS} layer names, comma-separated", ("query", "layers"))
    doc = await require_job(jobs, tenant, job_id)
    cache = jobs.part(tenant, job_id, JobPart.ACTIVATIONS)
    field = json.dumps([step, names, format, bins])
    media = OCTET if format == "safetensors" else "application/json"
    kept = opt_bytes(await jobs.redis.hget(cache, field))
    if kept is not None:
        return Response(kept, media_type=media)
    opened, req = await _open(request, jobs, tenant, settings, doc, step, "auto")
    sid = json.loads(bytes(opened.body))["id"]
    calls, _ = context(request)
    try:
        args = {
            "criterion": req.criterion.model_dump(mode="json", exclude_unset=True),
            "layers": names,
            "bins": bins,
            "tensors": format == "safetensors",
        }
        reply = await calls.call(tenant=tenant, sid=sid, op="activations", args=args)
    finally:
        await forget_session(request, tenant, sid)
    pipe = jobs.redis.pipeline(transaction=False)
    pipe.hset(cache, field, reply.body)
    pipe.expire(cache, settings.job_ttl_s)
    await pipe.execute()
    return Response(reply.body, media_type=media)


@batch_router.get("/{session_id}/batch", responses={404: {"description": "No such session, or not opened at a step"}})
async def session_batch(
    session_id: str, request: Request, tenant: TenantDep, format: Literal["json", "safetensors"] = "json"
) -> Any:
    """The batch of the step a session was opened at (``inputs``, ``targets``): forward the one, take the job's
    criterion against the other, and the loss is the job's at that step."""
    store: Store = request.app.state.store
    blob = opt_bytes(await store.redis.hget(store.keys.session(tenant, session_id), "batch"))
    if blob is None:
        raise NotFound(f"session '{session_id}' not found, or not opened at a job's step (POST /v1/jobs/ID/sessions)")
    if format == "safetensors":
        return Response(blob, media_type=OCTET)
    tensors = from_safetensors(blob, loc=("session", "batch"))
    step = int(safetensors_metadata(blob).get("step", 0))
    encoded = {k: encode(v) for k, v in tensors.items()}  # nested lists, as forward and loss take them
    dtypes = {k: e["dtype"] for k, e in encoded.items()}
    return TensorJSONResponse({"step": step, **{k: e["data"] for k, e in encoded.items()}, "dtypes": dtypes})


@batch_router.post(
    "/{session_id}/jobs",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobSubmitted,
    responses={404: {"description": "No such session, or its job is gone"}, 409: {"description": "Not from a job"}},
)
async def continue_as_job(
    session_id: str,
    request: Request,
    submitter: SubmitterDep,
    body: SessionJobCreate = Body(
        default=SessionJobCreate(),
        openapi_examples={"lower lr": {"summary": "On at lr 0.01", "value": {"changes": {"lr": 0.01}}}},
    ),
) -> dict[str, Any]:
    """Continue a session opened at a job's step as a job: a fork of that job from the session's weights and
    optimizer as they stand, with the job's RNG, scheduler and data order at the step, and ``changes``. A
    session left as it was opened continues exactly as a fork at the checkpoint before its step would."""
    jobs, tenant = submitter.jobs, submitter.tenant
    store: Store = request.app.state.store
    meta = opt_bytes(await store.redis.hget(store.keys.session(tenant, session_id), "meta"))
    if meta is None:
        raise NotFound(f"session '{session_id}' not found")
    origin = json.loads(meta)["public"].get("job")
    if origin is None:
        raise Conflict(
            f"session '{session_id}' was not opened at a job's step, so it has no job to continue: "
            "open one with POST /v1/jobs/ID/sessions, or submit a job"
        )
    await require_job(jobs, tenant, origin["id"])
    calls, _ = context(request)
    reply = await calls.call(tenant=tenant, sid=session_id, op="continuation", args={})
    taken = origin["step"] - 1  # a session opened at step K holds the job after K - 1 steps
    req, fork = await plan_fork(jobs, tenant, origin["id"], taken, body.changes, reply.body, session=session_id)
    return {"id": await submitter.submit(req, fork), "status": "queued"}
