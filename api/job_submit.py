"""Turn a job request into a stored, queued job: resolve the network, check everything, enqueue by name."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from kombu.exceptions import OperationalError

from api.deps import CeleryDep, SettingsDep, StoreDep, TenantDep
from models.errors import InvalidInput, Loc, NotFound
from models.nn.build import NetworkSummary, validate_network
from models.nn.job_network import ExportedNetwork
from models.nn.job_plan import plan_job
from models.placement import LANE_JOBS, place
from models.settings import Settings
from models.spec.job import InlineDataset, JobCreate, UploadDataset
from models.spec.network import NetworkSpec
from models.store.jobs import JobStore
from models.store.keys import JobPart
from models.store.redis import Store
from models.store.summary import summary as records_summary
from models.tasks import JOB_RUN
from models.wire.tensors import decode, describe_array, from_safetensors, to_safetensors

# Shape inference of a network costs ~10 ms and its result depends on the spec alone (and the limits,
# which are fixed per process), so repeated submissions of one network skip it.
SUMMARY_CACHE = 256
FORKED = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")
log = logging.getLogger(__name__)
_summaries: dict[str, NetworkSummary] = {}
_summaries_lock = threading.Lock()


async def job_network_of(
    req: JobCreate, store: Store, tenant: str, where: str = "body"
) -> NetworkSpec | ExportedNetwork:
    """The request's network in either form (an exported one's programs stay in Redis until submit copies them)."""
    if req.network is not None:
        return req.network
    assert req.network_id is not None  # JobCreate's validator: exactly one of network, network_id
    doc = await store.get_network(tenant=tenant, network_id=req.network_id)
    if doc is None:
        raise NotFound(f"network '{req.network_id}' not found ({where}.network_id)")
    if doc.get("format") == "export":
        blobs = store.keys.network_blobs(tenant, req.network_id)
        return ExportedNetwork.from_network(doc, blobs, (where, "network_id"))
    return NetworkSpec.model_validate(doc["spec"])


def network_summary(spec: NetworkSpec, settings: Settings) -> NetworkSummary:
    """``validate_network`` (blocking: call it in a thread), remembered per spec."""
    summary = _summaries.get(spec_json := spec.model_dump_json())
    if summary is None:
        summary = validate_network(spec, settings, ("body", "network"))
        with _summaries_lock:  # threadpool threads share the cache; eviction iterates it
            _summaries[spec_json] = summary
            while len(_summaries) > SUMMARY_CACHE:
                _summaries.pop(next(iter(_summaries)))
    return summary


def get_job_store(request: Request) -> JobStore:
    store = request.app.state.store
    return JobStore(store.redis, store.keys, request.app.state.artifacts)


JobStoreDep = Annotated[JobStore, Depends(get_job_store)]


@dataclass
class Submitter:
    """What queuing a job needs, resolved once per request (new jobs and forks)."""

    settings: Settings
    store: Store
    jobs: JobStore
    celery: Celery
    tenant: str

    async def submit(self, req: JobCreate, fork: ForkStart | None = None) -> str:
        s = self
        return await submit(
            req, tenant=s.tenant, settings=s.settings, store=s.store, jobs=s.jobs, celery=s.celery, fork=fork
        )


def get_submitter(
    settings: SettingsDep, store: StoreDep, jobs: JobStoreDep, celery: CeleryDep, tenant: TenantDep
) -> Submitter:
    return Submitter(settings, store, jobs, celery, tenant)


SubmitterDep = Annotated[Submitter, Depends(get_submitter)]


async def require_job(jobs: JobStore, tenant: str, job_id: str) -> dict[str, Any]:
    doc = await jobs.get_job(tenant=tenant, job_id=job_id)
    if doc is None:
        raise NotFound(f"job '{job_id}' not found")
    return doc


async def checkpoint_state(jobs: JobStore, tenant: str, job_id: str, step: int) -> bytes:
    """The full training state kept at ``step``, or a 404 that lists the steps kept."""
    blob = await jobs.checkpoint_state(tenant=tenant, job_id=job_id, step=step)
    if blob is None:
        kept = [c["step"] for c in await jobs.checkpoints(tenant=tenant, job_id=job_id)]
        shown = ", ".join(map(str, kept[-20:])) or "none"
        raise NotFound(f"job '{job_id}' keeps no checkpoint at step {step}; kept steps: {shown}")
    return blob


@dataclass
class ForkStart:
    """A fork begins where its parent was: the state at ``step``, the parent's records up to it."""

    parent: str
    step: int
    state: bytes
    policy: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    data: bytes | None = None  # the parent's inline dataset, when the fork keeps it
    check: Any = None  # called with the plan before anything is stored (raises InvalidInput)
    exported: ExportedNetwork | None = None  # the parent's exported network, its programs in the parent's INIT
    session: str | None = None  # the session whose state this is (a session continued as a job)


async def submit(
    req: JobCreate,
    *,
    tenant: str,
    settings: Settings,
    store: Store,
    jobs: JobStore,
    celery: Celery,
    fork: ForkStart | None = None,
    sweep: str | None = None,
) -> str:
    """Validate, store and enqueue a job; return its id. Raises a 4xx error for anything that cannot run."""
    network_id = req.network_id
    spec = fork.exported if fork is not None and fork.exported is not None else await job_network_of(req, store, tenant)
    if isinstance(spec, ExportedNetwork):
        summary = spec.summary()
    else:
        summary = await run_in_threadpool(network_summary, spec, settings)
    arrays, data, source_key, decode = None, None, None, None
    job_id = f"job_{uuid.uuid4().hex}"
    request_doc = req.model_dump(mode="json", exclude_unset=True)
    arrays_loc: Loc = ("body", "dataset")
    if isinstance(req.dataset, InlineDataset) and fork is not None and fork.data is not None:
        data = fork.data
        arrays = {k: describe_array(t) for k, t in from_safetensors(data).items()}
        source_key = jobs.part(tenant, job_id, JobPart.DATA)
    elif isinstance(req.dataset, InlineDataset):
        data, arrays = await run_in_threadpool(_inline, req.dataset, settings)
        source_key = jobs.part(tenant, job_id, JobPart.DATA)
        # The tensors now live in Redis; the stored request keeps only their place.
        request_doc["dataset"] = {"source": "inline", "inputs": [], "targets": []}
    elif isinstance(req.dataset, UploadDataset):
        meta = await jobs.dataset_meta(tenant=tenant, dataset_id=req.dataset.id)
        if meta is None:
            raise NotFound(f"dataset '{req.dataset.id}' not found (body.dataset.id)")
        arrays, arrays_loc = meta["arrays"], ("body", "dataset", "id")
        source_key = store.keys.dataset(tenant, req.dataset.id)
        decode = meta.get("decode")  # an image folder or table, stored as received (models.data.formats)
    plan = await run_in_threadpool(plan_job, req, spec, summary, settings, arrays, arrays_loc)
    if decode is not None:
        plan["decode"] = decode
    if fork is not None and fork.check is not None:
        fork.check(plan)
    # The device itself is the worker's to choose (models.placement.worker_device): "auto" stays "auto".
    queue = place(LANE_JOBS, req.device, await store.live_workers()).queue
    fields: dict[str, Any] = {
        "id": job_id,
        "status": "queued",
        "created_at": time.time(),
        "step": 0,
        "attempt": 1,
        "total_steps": plan["total_steps"],
        "device": req.device,
        "queue": queue,
        "batch_size": req.batch_size,
        "world_size": req.world_size,
        "training": json.dumps(req.training_settings()),
        "network_id": network_id,
        "request": json.dumps(request_doc),
        "plan": json.dumps(plan),
        "network": spec.stored() if isinstance(spec, ExportedNetwork) else spec.model_dump_json(exclude_unset=True),
        "source_key": source_key,
        "name": req.name,
        "tags": json.dumps(req.tags),
        "sweep": sweep,  # the sweep this job is a trial of
    }
    if fork is not None:
        # Its parent's numbers up to the fork; a rate belongs to the run that measured it.
        numbers = records_summary(fork.history)
        fields.update(
            parent=json.dumps(
                {"id": fork.parent, "step": fork.step, **({"session": fork.session} if fork.session else {})}
            ),
            fork=json.dumps(fork.policy),
            step=fork.step,
            recorded_step=fork.step,
            **{k: v for k, v in numbers.items() if k in FORKED and isinstance(v, (int, float))},
        )
    if isinstance(spec, ExportedNetwork):  # before the job exists: a worker never sees it without its programs
        await jobs.copy_init(tenant=tenant, job_id=job_id, source=spec.blobs_key, ttl_s=settings.job_ttl_s)
    await jobs.create_job(
        tenant=tenant,
        job_id=job_id,
        fields=fields,
        data=data,
        ttl_s=settings.job_ttl_s,
        max_records=settings.job_max_records,
        state=None if fork is None else fork.state,
        history=None if fork is None else fork.history,
        max_concurrent=settings.max_concurrent_jobs,
        storage_bytes=job_storage_bound(req, plan, summary, len(data or b""), settings),
        quota=settings.tenant_storage_bytes,
    )
    try:
        await run_in_threadpool(celery.send_task, JOB_RUN, args=[tenant, job_id], queue=queue, task_id=f"{job_id}-1")
    except OperationalError:  # the job is stored: the workers' reaper sends it once it sees it unclaimed
        log.warning("could not publish job %s now; the reaper will send it", job_id, exc_info=True)
    return job_id


# Per metric record in the events stream, about: a JSON object of a few numbers and the stream's overhead.
RECORD_BYTES = 160
# A resume file holds the weights and at most three optimizer slots per parameter (RMSprop centered with
# momentum, Adam with amsgrad), on top of the checkpoint's copy of the weights.
RESUME_COPIES = 5


def job_storage_bound(
    req: JobCreate, plan: dict[str, Any], summary: NetworkSummary, data_bytes: int, settings: Settings
) -> int:
    """The most a job may write: its inline data, checkpoint and resume files, gradient snapshots (and
    their statistics), and its metric records. Booked against the tenant's quota when it is submitted."""
    weights = summary.num_elements * 4
    every = req.capture.gradients_every or 0
    total = int(plan["total_steps"])
    snapshots = min(total // every, settings.max_gradient_snapshots) if every else 0
    records = min(total, settings.job_max_records) + 16
    return data_bytes + RESUME_COPIES * weights + 2 * snapshots * weights + records * RECORD_BYTES


def _inline(ds: InlineDataset, settings: Settings) -> tuple[bytes, dict[str, dict[str, Any]]]:
    loc = ("body", "dataset")
    inputs = decode(ds.inputs, max_elements=settings.max_tensor_elements, loc=(*loc, "inputs"))
    targets = decode(ds.targets, max_elements=settings.max_tensor_elements, loc=(*loc, "targets"))
    for name, t in (("inputs", inputs), ("targets", targets)):
        if t.dim() == 0:
            raise InvalidInput(f"{name} must have a batch dimension (one row per sample)", (*loc, name))
    arrays = {"inputs": describe_array(inputs), "targets": describe_array(targets)}
    return to_safetensors({"inputs": inputs, "targets": targets}), arrays
