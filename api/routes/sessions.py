"""Sessions: one live model driven a call at a time, as the PyTorch tutorial drives ``net`` in a REPL.

Every call runs on a worker (api.calls); the API validates, decodes tensors, and passes the
worker's answer through as it came, so tensor-carrying bodies are serialised once, on the worker.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from typing import Annotated, Any, Literal

import torch
from fastapi import APIRouter, Body, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from api import session_quota
from api.binary_route import BINARY_ANSWER, BINARY_REQUEST, BinaryBodyRoute, binary_tensors, wants_binary
from api.calls import SessionCalls
from api.deps import get_tenant
from api.schemas import sessions as S
from models.errors import InvalidInput, NotFound, ServiceUnavailable
from models.nn.build import build_network, validate_network
from models.nn.exported_admit import stored_form
from models.nn.graph import DEFAULT_MAX_NODES
from models.nn.job_network import ExportedNetwork
from models.nn.objectives import build_optimizer
from models.settings import Settings
from models.spec.network import NetworkSpec
from models.store.redis import Store
from models.store.replies import opt_bytes
from models.tasks import LANE_SESSIONS, lanes_of, place
from models.wire.session import CALL_ID_PATTERN, Reply
from models.wire.tensors import decode

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], route_class=BinaryBodyRoute)
MAX_GRAPH_NODES = 5000


def context(request: Request) -> tuple[SessionCalls, str]:
    """The app's session caller and the request's tenant, resolved without ``Depends`` on this hot path."""
    calls: SessionCalls = request.app.state.session_calls
    return calls, get_tenant(request, calls.settings)


def _json(reply: Reply, status_code: int = 200) -> Response:
    """The worker's body as it came; Server-Timing says how much of the wait was the worker's."""
    headers = {"Server-Timing": reply.server_timing, "Call-Id": reply.call_id}
    return Response(reply.body, status_code=status_code, media_type=reply.media, headers=headers)


def _call_id(request: Request) -> str | None:
    """The client's ``Idempotency-Key``: a retry carrying it gets the first answer, never a second application."""
    key = request.headers.get("idempotency-key")
    if key is not None and not re.fullmatch(CALL_ID_PATTERN, key):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 128 characters of letters, digits and . _ : - (e.g. a UUID)",
            ("header", "Idempotency-Key"),
        )
    return key


def _tensor(request: Request, name: str, value: Any) -> torch.Tensor:
    """The argument ``name``: from a binary body as it came, else decoded from its JSON form."""
    sent = binary_tensors(request).get(name)
    if sent is not None:
        return sent
    settings: Settings = request.app.state.settings
    return decode(value, max_elements=settings.max_tensor_elements, loc=("body", name))


async def _run(request: Request, session_id: str, op: str, **kwargs: Any) -> Response:
    """One call on the session, answered in the form the request's ``Accept`` asks for."""
    calls, tenant = context(request)
    binary, call_id = wants_binary(request), _call_id(request)
    return _json(await calls.call(tenant=tenant, sid=session_id, op=op, binary=binary, call_id=call_id, **kwargs))


def _answers(model: type) -> dict[int | str, dict[str, Any]]:
    """The JSON answer's model, and its safetensors form for ``Accept: application/octet-stream``."""
    return {200: {"model": model, "content": BINARY_ANSWER}}


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_class=Response, responses={201: {"model": S.SessionPublic}}
)
async def create_session(body: S.SessionCreate, request: Request) -> Response:
    """Build the network on a worker under ``torch.manual_seed(seed)``, as a local run would."""
    calls, tenant = context(request)
    store: Store = request.app.state.store
    settings = calls.settings
    network_id = body.network_id
    if network_id is not None:
        doc = await store.get_network(tenant=tenant, network_id=network_id)
        if doc is None:
            raise NotFound(f"network '{network_id}' not found")
        if doc.get("format") == "export":
            return await _create_exported(request, body, doc)
        spec = NetworkSpec.model_validate(doc["spec"])
    else:
        assert body.network is not None  # SessionCreate's validator: exactly one of network, network_id
        spec = body.network
    summary = await run_in_threadpool(_validate, spec, body, settings)
    network = {
        "spec": spec.model_dump(mode="json", exclude_unset=True),
        "input_shape": spec.input_shape,
        "input_dtype": spec.input_dtype,
    }
    return await _start(request, body, network_id, summary.public(), network, {})


async def start_from_job(
    request: Request,
    body: S.SessionCreate,
    network_id: str | None,
    from_job: dict[str, Any],
    exported: ExportedNetwork | None = None,
) -> Response:
    """A session holding a job's state before a step (``from_job``): of its catalogue network (``body.network``),
    or of its exported one, whose programs and initial weights the job keeps (``exported``)."""
    extra: dict[str, Any] = {"job": {"id": from_job["job_id"], "step": from_job["step"]}}
    if exported is not None:
        store: Store = request.app.state.store
        fields = [f"{m}_program" for m in exported.modes]
        programs = [opt_bytes(p) for p in await store.redis.hmget(exported.blobs_key, fields)]
        if any(p is None for p in programs):
            raise NotFound(f"job '{from_job['job_id']}''s exported programs have expired")
        network: dict[str, Any] = {
            "format": "export",
            "form": exported.form,
            "programs": {m: p.decode() for m, p in zip(exported.modes, programs, strict=True) if p is not None},
            "weights_key": exported.blobs_key,
        }
        summary = exported.summary().public()
        extra["format"] = "export"
        return await _start(request, body, network_id, summary, network, extra, {"from_job": from_job})
    assert body.network is not None
    settings: Settings = request.app.state.settings
    built = await run_in_threadpool(_validate, body.network, body, settings)
    network = {
        "spec": body.network.model_dump(mode="json", exclude_unset=True),
        "input_shape": body.network.input_shape,
        "input_dtype": body.network.input_dtype,
    }
    return await _start(request, body, network_id, built.public(), network, extra, {"from_job": from_job})


async def _create_exported(request: Request, body: S.SessionCreate, doc: dict[str, Any]) -> Response:
    """A session of an exported network: its checked programs travel in the session's meta, its weights
    are read once from the network's blobs by the worker that builds it."""
    _, tenant = context(request)
    store: Store = request.app.state.store
    if body.optimizer is not None:
        with torch.device("meta"):
            build_optimizer(body.optimizer, [torch.nn.Parameter(torch.empty(1))])
    network_id = str(doc["id"])
    fields = [f"{m}_program" for m in doc["modes"]]
    programs = await store.network_blobs(tenant=tenant, network_id=network_id, fields=fields)
    if any(p is None for p in programs):
        raise NotFound(f"network '{network_id}' not found")
    network = {
        "format": "export",
        "form": stored_form(doc),
        "programs": {m: p.decode() for m, p in zip(doc["modes"], programs, strict=True) if p is not None},
        "weights_key": store.keys.network_blobs(tenant, network_id),
    }
    return await _start(request, body, network_id, doc, network, {"format": "export"})


async def _start(
    request: Request,
    body: S.SessionCreate,
    network_id: str | None,
    summary: dict[str, Any],
    network: dict[str, Any],
    public_extra: dict[str, Any],
    create_args: dict[str, Any] | None = None,
) -> Response:
    """Place, admit and build the session on a worker; ``network`` is what its meta says of the network,
    ``create_args`` what else the worker's create takes (a job's step to start from)."""
    calls, tenant = context(request)
    store: Store = request.app.state.store
    device, queue = await _place(body.device, store)
    sid, call_id = _new_session_id(request, tenant)
    state_bytes = session_quota.state_bound(int(summary["num_elements"]))
    await session_quota.admit(store.redis, store.keys, calls.settings, tenant, sid, state_bytes)
    optimizer = None if body.optimizer is None else body.optimizer.model_dump(mode="json", exclude_unset=True)
    public = {
        "id": sid,
        **{k: summary[k] for k in ("repr", "parameters", "num_parameters", "num_elements", "output_shape")},
        "device": device,
        "seed": body.seed,
        "optimizer": optimizer,
        "network_id": network_id,
        **public_extra,
    }
    meta = {
        **network,
        "output_shape": summary["output_shape"],
        "activation_bytes_per_sample": summary["activation_bytes_per_sample"],
        "device": device,
        "optimizer": optimizer,
        "created_at": time.time(),
        "public": public,
    }
    try:
        reply = await calls.call(
            tenant=tenant,
            sid=sid,
            op="create",
            args={"seed": body.seed, **(create_args or {})},
            queue=queue,
            extra={"meta": meta, "queue": queue},
            call_id=call_id,
        )
    except BaseException:
        await session_quota.forget_unbuilt(store.redis, store.keys, tenant, sid)
        raise
    calls.remember(tenant, sid, queue)
    return _json(reply, status.HTTP_201_CREATED)


def _new_session_id(request: Request, tenant: str) -> tuple[str, str | None]:
    call_id = _call_id(request)
    # A retried create (same Idempotency-Key) names the same session, which the worker then does not build twice.
    key_hash = None if call_id is None else hashlib.sha256(f"{tenant}\0{call_id}".encode()).hexdigest()
    return f"sess_{key_hash[:32] if key_hash else uuid.uuid4().hex}", call_id


def _validate(spec: NetworkSpec, body: S.SessionCreate, settings: Settings) -> Any:
    summary = validate_network(spec, settings, loc=("body", "network"))
    if body.optimizer is not None:  # refuse e.g. nesterov without momentum here, not on the worker
        with torch.device("meta"):
            build_optimizer(body.optimizer, build_network(spec).parameters())
    return summary


async def _place(device: str, store: Store) -> tuple[str, str]:
    """The session's device and queue: the sessions lane, on a GPU when asked or (``auto``) when one is live."""
    workers = await store.live_workers()
    if not any(LANE_SESSIONS in lanes_of(w.get("queues", [])) for w in workers):
        raise ServiceUnavailable(
            "no session worker is alive to hold the session (`gradserve worker --lane sessions`); see GET /readyz"
        )
    placed = place(LANE_SESSIONS, device, workers)
    if placed is None:
        raise InvalidInput(
            'no live session worker has a GPU (see GET /readyz); use "device": "cpu" or "auto"', ("body", "device")
        )
    return placed


@router.get("/{session_id}", response_model=S.SessionPublic)
async def get_session(session_id: str, request: Request) -> dict[str, Any]:
    """What the session was created as, and its state version."""
    _, tenant = context(request)
    store: Store = request.app.state.store
    meta, version = await store.redis.hmget(store.keys.session(tenant, session_id), ["meta", "version"])
    if meta is None:
        raise NotFound(f"session '{session_id}' not found")
    return {**json.loads(meta)["public"], "version": int(version or 0)}


async def forget_session(request: Request, tenant: str, session_id: str) -> bool:
    """Delete a session's state and release what it booked; False when there was none."""
    calls, _ = context(request)
    store: Store = request.app.state.store
    async with calls.serial(tenant, session_id):
        deleted = await store.redis.delete(store.keys.session(tenant, session_id))
    calls.forget(tenant, session_id)
    await session_quota.release(store.redis, store.keys, tenant, session_id)
    return bool(deleted)


@router.delete("/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_session(session_id: str, request: Request) -> Response:
    """Forget the session and its state (after any call on it in flight)."""
    _, tenant = context(request)
    if not await forget_session(request, tenant, session_id):
        raise NotFound(f"session '{session_id}' not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{session_id}/forward",
    response_class=Response,
    responses=_answers(S.ForwardPublic),
    openapi_extra=BINARY_REQUEST,
)
async def forward(session_id: str, body: S.ForwardIn, request: Request) -> Response:
    """``output = net(input)``; the graph stays on the session for loss and backward."""
    if body.inputs is not None:
        tensors = {f"inputs.{k}": _tensor(request, f"inputs.{k}", v) for k, v in body.inputs.items()}
        return await _run(request, session_id, "forward", tensors=tensors)
    x = _tensor(request, "input", body.input)
    return await _run(request, session_id, "forward", tensors={"input": x})


@router.post(
    "/{session_id}/loss", response_class=Response, responses=_answers(S.LossPublic), openapi_extra=BINARY_REQUEST
)
async def loss(session_id: str, body: S.LossIn, request: Request) -> Response:
    """``loss = criterion(output, target)`` on the last forward's output."""
    target = _tensor(request, "target", body.target)
    criterion = body.criterion.model_dump(mode="json", exclude_unset=True)
    return await _run(request, session_id, "loss", args={"criterion": criterion}, tensors={"target": target})


@router.post(
    "/{session_id}/backward",
    response_class=Response,
    responses=_answers(S.BackwardPublic),
    openapi_extra=BINARY_REQUEST,
)
async def backward(session_id: str, request: Request, body: S.BackwardIn | None = Body(default=None)) -> Response:
    """``loss.backward()``, or ``output.backward(gradient)``; gradients accumulate as in PyTorch."""
    body = body or S.BackwardIn()
    gradient = body.gradient
    tensors = {} if gradient is None else {"gradient": _tensor(request, "gradient", gradient)}
    return await _run(request, session_id, "backward", args={"retain_graph": body.retain_graph}, tensors=tensors)


@router.post("/{session_id}/zero_grad", response_class=Response, responses=_answers(S.ZeroGradPublic))
async def zero_grad(session_id: str, request: Request, body: S.ZeroGradIn | None = Body(default=None)) -> Response:
    """``net.zero_grad(set_to_none=...)``: grads become None (default) or zeros."""
    body = body or S.ZeroGradIn()
    return await _run(request, session_id, "zero_grad", args={"set_to_none": body.set_to_none})


@router.post("/{session_id}/train", response_class=Response, responses=_answers(S.TrainPublic))
async def train(session_id: str, request: Request, body: S.TrainIn | None = Body(default=None)) -> Response:
    """``net.train(mode)``; ``{"mode": false}`` is ``net.eval()``: dropout off, batch norm on running statistics."""
    body = body or S.TrainIn()
    return await _run(request, session_id, "train", args={"mode": body.mode})


@router.post("/{session_id}/manual_seed", response_class=Response, responses=_answers(S.ManualSeedPublic))
async def manual_seed(session_id: str, body: S.ManualSeedIn, request: Request) -> Response:
    """``torch.manual_seed(seed)`` for the session's generator: dropout after it matches a local run's."""
    return await _run(request, session_id, "manual_seed", args={"seed": body.seed})


@router.get("/{session_id}/parameters/{name}", response_class=Response, responses=_answers(S.ParameterPublic))
async def parameter(session_id: str, name: str, request: Request) -> Response:
    """A parameter's (or buffer's) data and grad; ``grad`` is null when it is None (absent from safetensors)."""
    return await _run(request, session_id, "parameter", args={"name": name})


@router.post("/{session_id}/sgd_update", response_class=Response, responses=_answers(S.SgdUpdatePublic))
async def sgd_update(session_id: str, body: S.SgdUpdateIn, request: Request) -> Response:
    """The tutorial's manual rule, ``p.data.sub_(p.grad.data * lr)`` for every parameter with a grad."""
    return await _run(request, session_id, "sgd_update", args={"lr": float(body.lr)})


@router.post("/{session_id}/step", response_class=Response, responses=_answers(S.StepPublic))
async def step(session_id: str, request: Request) -> Response:
    """``optimizer.step()`` with the session's optimizer, whose state persists across calls."""
    return await _run(request, session_id, "step")


@router.get(
    "/{session_id}/graph",
    response_class=Response,
    responses={
        200: {"model": S.GraphPublic, "content": {"text/vnd.graphviz": {}, "image/svg+xml": {}}},
        503: {"description": "format=svg and Graphviz is not installed on the worker"},
    },
)
async def graph(
    session_id: str,
    request: Request,
    format: Literal["json", "dot", "svg"] = "json",
    max_nodes: Annotated[int, Query(ge=1, le=MAX_GRAPH_NODES)] = DEFAULT_MAX_NODES,
    root: Literal["auto", "loss", "output"] = "auto",
) -> Response:
    """The autograd graph of the last loss (or output), walked through ``grad_fn.next_functions``."""
    calls, tenant = context(request)
    args = {"format": format, "max_nodes": max_nodes, "root": root}
    return _json(await calls.call(tenant=tenant, sid=session_id, op="graph", args=args))


@router.get(
    "/{session_id}/state",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "safetensors"}},
)
async def get_state(session_id: str, request: Request) -> Response:
    """``net.state_dict()`` as a safetensors file (load it with ``safetensors.torch.load``)."""
    calls, tenant = context(request)
    reply = await calls.call(tenant=tenant, sid=session_id, op="get_state")
    headers = {
        "Content-Disposition": f'attachment; filename="{session_id}.safetensors"',
        "Server-Timing": reply.server_timing,
    }
    return Response(reply.body, media_type=reply.media, headers=headers)


@router.put(
    "/{session_id}/state",
    response_class=Response,
    responses={200: {"model": S.StateLoaded}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_state(session_id: str, request: Request) -> Response:
    """``net.load_state_dict(...)`` from a safetensors file; names, shapes and dtypes must all match."""
    blob = await request.body()
    if not blob:
        raise InvalidInput("the body must be a safetensors file (the bytes GET .../state returns)", ("body",))
    return await _run(request, session_id, "put_state", blobs={"state": blob})
