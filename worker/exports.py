"""Files made from a job on request, on a session worker rather than in the API: an export of the network with a
checkpoint's weights (TorchScript, ONNX, pt2) and a TensorBoard archive of its records.

The API publishes one task per request (``api.offload``) and blocks on its reply key. The worker claims the
attempt first (an attempt the API already gave up on is never run), stops at the call's deadline, puts the
file in the artifact store and answers with where it is, so the bytes never ride through Redis lists. An
export is kept under the job's EXPORTS part and made once; an archive reflects the job as it is now, so it
is made afresh each time and taken (read, then deleted) by the API.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import tarfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import torch
from redis.asyncio import Redis as AsyncRedis
from safetensors.torch import load as st_load

from models.errors import GradserveError, InvalidInput, NotFound, ServiceUnavailable, Timeout
from models.nn.export import ExportFormat, export_module, export_network
from models.nn.exported_admit import build_stored
from models.nn.state_codec import unpack_train_state
from models.settings import Settings
from models.spec.network import NetworkSpec
from models.store.artifacts import shared_artifacts
from models.store.connect import redis_options
from models.store.jobs import JobStore
from models.store.keys import Keys
from models.wire import tensorboard
from models.wire.metric_values import as_float
from models.wire.session import answer_frame, error_frame, stamp
from models.wire.tensorboard import Value
from models.wire.tensors import DTYPES, from_safetensors
from worker.session_store import Abandoned, claim

log = logging.getLogger("gradserve.exports")
# Record field -> TensorBoard tag; train/ and eval/ become two groups of charts.
SCALARS = {
    "loss": "train/loss",
    "accuracy": "train/accuracy",
    "lr": "train/lr",
    "samples_per_s": "train/samples_per_s",
    "val_loss": "eval/loss",
    "val_accuracy": "eval/accuracy",
}


def handle(client: redis.Redis, keys: Keys, settings: Settings, call: dict[str, Any], worker: str = "") -> None:
    """Make what ``call`` asks for and push the answer (or the error) onto the call's reply key."""
    started = time.perf_counter()
    attempt = call["attempt"]
    if time.time() > call["deadline"]:  # redelivered after the API answered 503/504: nobody waits for it
        log.warning("dropping %s of job %s: past its deadline", call["kind"], call["job_id"])
        return
    try:
        claim(client, keys, attempt, worker, settings.export_timeout_s + 60)
    except Abandoned:
        log.warning("dropping %s of job %s: the API gave up on it before it was taken", call["kind"], call["job_id"])
        return
    try:
        with deadline(call["deadline"], f"{call['kind']} of job '{call['job_id']}'"):
            body = asyncio.run(_made(settings, keys, call))
        frame = answer_frame({**body, "worker": worker})
    except GradserveError as exc:
        frame = error_frame(exc)
    except Exception as exc:  # a bug or an exporter's own error must reach the caller, not kill the worker
        log.error("%s of job %s failed:\n%s", call["kind"], call["job_id"], traceback.format_exc())
        frame = error_frame(GradserveError(f"the worker failed on the {call['kind']}: {type(exc).__name__}: {exc}"))
    reply = keys.reply(attempt)
    pipe = client.pipeline(transaction=False)
    pipe.lpush(reply, stamp(frame, (time.perf_counter() - started) * 1e3))
    pipe.expire(reply, settings.reply_ttl_s)
    pipe.execute()


@contextmanager
def deadline(at: float, what: str) -> Iterator[None]:
    """Raise Timeout in this thread once the wall clock passes ``at``: an exporter stuck in a huge graph must
    not hold the worker after its caller was answered 504. A session worker runs tasks on its main thread
    (solo pool), where signals land; elsewhere the API's own wait still bounds the caller."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise Timeout(f"the {what} took longer than GRADSERVE_EXPORT_TIMEOUT_S; the worker stopped it", retry_after=5)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, max(0.001, at - time.time()))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


async def _made(settings: Settings, keys: Keys, call: dict[str, Any]) -> dict[str, Any]:
    assert settings.redis_url is not None  # a worker runs only with one (worker.celery_app)
    conn = AsyncRedis.from_url(settings.redis_url, **redis_options(settings))
    try:
        jobs = JobStore(conn, keys, shared_artifacts(settings))
        if call["kind"] == "export":
            return await _export(jobs, settings, call)
        if call["kind"] == "tensorboard":
            return await _tensorboard(jobs, call)
        raise InvalidInput(f"unknown kind of file '{call['kind']}'", ("path",))
    finally:
        await conn.aclose()


# --- exports ---
async def _export(jobs: JobStore, settings: Settings, call: dict[str, Any]) -> dict[str, Any]:
    """Make the export ``{format}:{step}`` and keep it, unless another request already did."""
    tenant, job_id, step, fmt = call["tenant"], call["job_id"], call["step"], call["format"]
    name = f"{fmt}:{step}"
    if await jobs.export_kept(tenant=tenant, job_id=job_id, name=name):  # another API process asked first
        return {"name": name}
    state = await jobs.checkpoint_state(tenant=tenant, job_id=job_id, step=step)
    if state is None:
        raise NotFound(f"job '{job_id}' keeps no checkpoint at step {step}")
    raw = await jobs.raw_field(tenant=tenant, job_id=job_id, name="network") or b"{}"
    if json.loads(raw).get("format") == "export":
        init = await jobs.init_parts(tenant=tenant, job_id=job_id)
        blob = export_program(raw, init, state, fmt)
    else:
        blob = export_spec(NetworkSpec.model_validate_json(raw), state, fmt)
    await jobs.put_export(tenant=tenant, job_id=job_id, name=name, blob=blob, ttl_s=settings.job_ttl_s)
    return {"name": name}


def export_spec(spec: NetworkSpec, state: bytes, fmt: ExportFormat) -> bytes:
    with _export_extra(fmt):
        return export_network(spec, unpack_train_state(state).model, fmt)


def export_program(network: bytes, init: dict[str, bytes], state: bytes, fmt: ExportFormat) -> bytes:
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
            f"{fmt} export needs {exc.name} on the session workers' hosts: pip install 'gradserve[export]'"
        ) from exc


# --- TensorBoard ---
async def _tensorboard(jobs: JobStore, call: dict[str, Any]) -> dict[str, Any]:
    tenant, job_id = call["tenant"], call["job_id"]
    doc = await jobs.get_job(tenant=tenant, job_id=job_id)
    if doc is None:
        raise NotFound(f"job '{job_id}' not found")
    records = await jobs.metric_records(tenant=tenant, job_id=job_id, since=None)
    gradients: dict[int, bytes] = {}
    for step in await jobs.gradient_steps(tenant=tenant, job_id=job_id):
        blob = await jobs.gradient_file(tenant=tenant, job_id=job_id, step=step)
        if blob is not None:
            gradients[step] = blob
    started = float(doc.get("started_at") or doc.get("created_at") or time.time())
    body = archive(job_id, event_file(records, gradients, started), started)
    return {"ref": await jobs.put_archive(tenant=tenant, job_id=job_id, attempt=call["attempt"], blob=body)}


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
