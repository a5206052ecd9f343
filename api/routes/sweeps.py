"""Sweeps: hyperparameter search on Optuna, each trial an ordinary job (see api/sweep_controller.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from api.deps import SettingsDep, StoreDep, TenantDep
from api.job_submit import JobStoreDep, job_network_of, network_summary
from api.listing import PagingDep, newest_first
from api.schemas.sweeps import SweepPublic, SweepsPublic, SweepStatus, SweepSubmitted
from api.strict_json import StrictJsonRoute
from models.errors import Conflict, InvalidInput, NotFound
from models.nn.job_network import ExportedNetwork
from models.nn.job_plan import plan_job
from models.settings import Settings
from models.spec.job import InlineDataset, UploadDataset
from models.spec.network import NetworkSpec
from models.spec.sweep import SweepCreate
from models.spec.sweep_space import blame, corner_requests
from models.store.jobs import JobStore
from models.store.redis import Store
from models.store.sweeps import SweepStore, best_trial

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], route_class=StrictJsonRoute)

EXAMPLE: dict[str, Any] = {
    "template": {
        "network": {
            "input_shape": [1, 8, 8],
            "layers": [
                {"type": "Flatten"},
                {"type": "Linear", "in_features": 64, "out_features": 32},
                {"type": "ReLU"},
                {"type": "Linear", "in_features": 32, "out_features": 10},
            ],
        },
        "dataset": {"source": "digits"},
        "criterion": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.05},
        "batch_size": 16,
        "epochs": 6,
    },
    "space": {
        "optimizer.lr": {"type": "float", "low": 0.0003, "high": 0.3, "log": True},
        "optimizer.momentum": {"type": "float", "low": 0.0, "high": 0.9},
    },
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "max_trials": 12,
    "parallelism": 2,
    "pruner": {"type": "median"},
}


def get_sweep_store(request: Request) -> SweepStore:
    store, settings = request.app.state.store, request.app.state.settings
    return SweepStore(store.redis, store.keys, settings.sweep_ttl_s)


SweepStoreDep = Annotated[SweepStore, Depends(get_sweep_store)]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=SweepSubmitted)
async def create_sweep(
    sweeps: SweepStoreDep,
    jobs: JobStoreDep,
    store: StoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
    body: SweepCreate = Body(openapi_examples={"digits": {"summary": "lr and momentum on digits", "value": EXAMPLE}}),
) -> dict[str, Any]:
    """Check the template and every corner of the space, then start the sweep (its trials start within a poll)."""
    if body.parallelism > settings.max_concurrent_jobs:
        raise InvalidInput(
            f"parallelism {body.parallelism} exceeds the {settings.max_concurrent_jobs} jobs a tenant may run at "
            "once (GRADSERVE_MAX_CONCURRENT_JOBS)",
            ("body", "parallelism"),
        )
    await _check(body, settings, jobs, store, tenant)
    sweep_id = f"swp_{uuid.uuid4().hex}"
    await sweeps.create(tenant=tenant, sweep_id=sweep_id, name=body.name, request=body.model_dump_json())
    return {"id": sweep_id, "status": "running"}


NO_HELD_OUT = (
    "the objective is {metric}, measured on a held-out split, and this dataset has none (use digits with "
    "test_fraction > 0, or upload test_inputs and test_targets)"
)


async def _check(body: SweepCreate, settings: Settings, jobs: JobStore, store: Store, tenant: str) -> None:
    """Plan every corner of the space as POST /v1/jobs would, with the template's network and data."""
    template = body.template
    if isinstance(template.dataset, InlineDataset):  # inputs and targets only: nothing held out
        raise InvalidInput(NO_HELD_OUT.format(metric=body.objective.metric), ("body", "template", "dataset"))
    network = await job_network_of(template, store, tenant, "body.template")
    arrays = None
    if isinstance(template.dataset, UploadDataset):
        meta = await jobs.dataset_meta(tenant=tenant, dataset_id=template.dataset.id)
        if meta is None:
            raise NotFound(f"dataset '{template.dataset.id}' not found (body.template.dataset.id)")
        arrays = meta["arrays"]
    await run_in_threadpool(_check_corners, body, network, settings, arrays)


def _check_corners(
    body: SweepCreate, stored: NetworkSpec | ExportedNetwork, settings: Settings, arrays: dict[str, Any] | None
) -> None:
    for params, req in corner_requests(body):
        net = req.network or stored
        summary = net.summary() if isinstance(net, ExportedNetwork) else network_summary(net, settings)
        try:
            plan = plan_job(req, net, summary, settings, arrays, ("body", "dataset", "id"))
        except InvalidInput as exc:  # its loc is a path into the job request: say which space path led there
            within = exc.loc[1:] if exc.loc[:1] == ("body",) else exc.loc
            path = blame(body, params, within)
            if path is None:  # the template itself, whatever the space picks
                raise InvalidInput(exc.msg, ("body", "template", *within)) from None
            raise InvalidInput(
                f"the space makes an invalid job with {params}: {exc.msg}", ("body", "space", path)
            ) from None
        if plan["num_val"] == 0:
            raise InvalidInput(NO_HELD_OUT.format(metric=body.objective.metric), ("body", "template", "dataset"))


@router.get("", response_model=SweepsPublic)
async def list_sweeps(
    sweeps: SweepStoreDep, tenant: TenantDep, status: SweepStatus | None = None, *, paging: PagingDep
) -> dict[str, Any]:
    """The tenant's sweeps, newest first (only those in ``status`` when given), each with its trial count
    and best value so far; ``total`` counts every match."""
    docs = [d for i in await sweeps.ids(tenant=tenant) if (d := await sweeps.get(tenant=tenant, sweep_id=i))]
    docs = [d for d in docs if status is None or d["status"] == status]
    page = newest_first(docs, paging)
    every = await sweeps.trials_of(tenant=tenant, sweep_ids=[d["id"] for d in page["data"]])
    for doc, trials in zip(page["data"], every, strict=True):
        req = doc["request"]
        best = best_trial(trials, req["objective"]["direction"])
        doc.update(
            objective=req["objective"],
            max_trials=req["max_trials"],
            trials=len(trials),
            best_value=None if best is None else best["value"],
        )
    return page


@router.get("/{sweep_id}", response_model=SweepPublic)
async def get_sweep(sweep_id: str, sweeps: SweepStoreDep, tenant: TenantDep) -> dict[str, Any]:
    """Status, every trial (job id, params, value, state), the best so far and parameter importances."""
    doc = await _require(sweeps, tenant, sweep_id)
    trials = await sweeps.trials(tenant=tenant, sweep_id=sweep_id)
    req = doc["request"]
    return {
        **doc,
        "objective": req["objective"],
        "max_trials": req["max_trials"],
        "parallelism": req["parallelism"],
        "seed": req["seed"],
        "trials": trials,
        "best": best_trial(trials, req["objective"]["direction"]),
    }


@router.post("/{sweep_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=SweepSubmitted)
async def cancel_sweep(
    sweep_id: str, sweeps: SweepStoreDep, jobs: JobStoreDep, tenant: TenantDep, settings: SettingsDep
) -> dict[str, Any]:
    """Start no more trials and cancel every running one (each stops after its current step)."""
    doc = await _require(sweeps, tenant, sweep_id)
    if not await sweeps.set_status(tenant=tenant, sweep_id=sweep_id, status="cancelled", only_from="running"):
        raise Conflict(f"sweep '{sweep_id}' has already ended ({doc['status']})")
    for trial in await sweeps.trials(tenant=tenant, sweep_id=sweep_id):
        if trial["state"] == "running" and trial["job_id"]:
            await jobs.cancel(
                tenant=tenant, job_id=trial["job_id"], ttl_s=settings.job_ttl_s, max_records=settings.job_max_records
            )
    return {"id": sweep_id, "status": "cancelled"}


@router.delete("/{sweep_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_sweep(sweep_id: str, sweeps: SweepStoreDep, tenant: TenantDep) -> Response:
    """Forget an ended sweep and its trial list; its trials stay, as the ordinary jobs they are
    (``GET /v1/jobs?tag=sweep=<id>``, each deleted with ``DELETE /v1/jobs/{id}``)."""
    doc = await _require(sweeps, tenant, sweep_id)
    if await sweeps.active(tenant=tenant, sweep_id=sweep_id):
        why = "cancel it first" if doc["status"] == "running" else "its trials are still stopping; retry shortly"
        raise Conflict(f"sweep '{sweep_id}' is {doc['status']}: {why}")
    await sweeps.delete(tenant=tenant, sweep_id=sweep_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _require(sweeps: SweepStore, tenant: str, sweep_id: str) -> dict[str, Any]:
    doc = await sweeps.get(tenant=tenant, sweep_id=sweep_id)
    if doc is None:
        raise NotFound(f"sweep '{sweep_id}' not found")
    return doc
