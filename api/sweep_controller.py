"""Drives the active sweeps, from the sweeper process (``api.sweeper``); state only in Redis.

Every ``sweep_poll_s`` the leading sweeper walks the active sweeps and drives each whose lease it holds
or can take (a sweep's own lease keeps a handover from driving it twice while an old leader finishes a
tick). Driving a sweep: report each running trial's new held-out records to Optuna, ask the job to stop when
the pruner says so (it ends ``pruned``), tell Optuna how ended trials ended, and start new trials as
ordinary jobs until ``max_trials`` have run with at most ``parallelism`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import optuna
from celery import Celery
from optuna.trial import TrialState
from redis.asyncio import Redis

from api import sweep_optuna as opt
from api.job_submit import submit
from models.errors import GradserveError, TooManyRequests
from models.settings import Settings
from models.spec.job import JobCreate
from models.spec.sweep import SweepCreate
from models.spec.sweep_space import apply_params, trial_template
from models.store.artifacts import shared_artifacts
from models.store.jobs import JobStore
from models.store.keys import JobPart
from models.store.leases import Leases
from models.store.redis import Store
from models.store.replies import text
from models.store.sweeps import SweepStore

log = logging.getLogger(__name__)

# A trial's state in the sweep, from its job's final status.
_ENDED = {
    "succeeded": ("complete", TrialState.COMPLETE),
    "pruned": ("pruned", TrialState.PRUNED),
    "failed": ("failed", TrialState.FAIL),
    "cancelled": ("cancelled", TrialState.FAIL),
}


class SweepController:
    def __init__(self, redis: Redis, store: Store, celery: Celery, settings: Settings) -> None:
        self.redis, self.store, self.celery, self.settings = redis, store, celery, settings
        self.keys = store.keys
        self.jobs = JobStore(redis, store.keys, shared_artifacts(settings))
        self.sweeps = SweepStore(redis, store.keys, settings.sweep_ttl_s)
        self.token = uuid.uuid4().hex
        self.leases = Leases(redis)
        self._storage: Any = None

    async def tick(self) -> None:
        for raw in await self.redis.smembers(self.keys.sweeps_active()):
            member = text(raw)
            if await self.leases.hold(self.keys.sweep_lease(member), self.token, self.settings.sweep_lease_ttl_s):
                tenant, _, sweep_id = member.partition("/")
                await self.drive(tenant, sweep_id)

    async def _study(self, tenant: str, sweep_id: str, sweep: SweepCreate) -> optuna.Study:
        if self._storage is None:
            assert self.settings.redis_url is not None
            url, prefix = self.settings.redis_url, self.keys.optuna_journal()
            self._storage = await asyncio.to_thread(opt.open_storage, url, prefix)
        return await asyncio.to_thread(opt.study, self._storage, f"{tenant}/{sweep_id}", sweep)

    async def drive(self, tenant: str, sweep_id: str) -> None:
        doc = await self.sweeps.get(tenant=tenant, sweep_id=sweep_id)
        if doc is None:  # expired or deleted
            await self.sweeps.finish(tenant=tenant, sweep_id=sweep_id)
            return
        sweep = SweepCreate.model_validate(doc["request"])
        study = await self._study(tenant, sweep_id, sweep)
        trials = await self.sweeps.trials(tenant=tenant, sweep_id=sweep_id)
        ended_one = False
        for trial in trials:
            if trial["state"] == "running":
                ended_one |= await self._follow(tenant, sweep_id, sweep, study, trial)
        running = sum(t["state"] == "running" for t in trials)
        if doc["status"] == "running" and running < sweep.parallelism and len(trials) < sweep.max_trials:
            # Read again: a cancel may have landed while the trials were followed (and ended some).
            doc = await self.sweeps.get(tenant=tenant, sweep_id=sweep_id) or {"status": "deleted"}
        if doc["status"] == "running":
            while running < sweep.parallelism and len(trials) < sweep.max_trials:
                started = await self._start(tenant, sweep_id, sweep, study, number=len(trials))
                if started is None:
                    break  # the tenant is at its job limit: try again next tick
                trials.append(started)
                running += started["state"] == "running"
        if ended_one:
            found = await asyncio.to_thread(opt.importances, study)
            if found is not None:
                await self.sweeps.update(tenant=tenant, sweep_id=sweep_id, importances=found)
        if running == 0 and (doc["status"] != "running" or len(trials) >= sweep.max_trials):
            # A sweep none of whose trials completed found nothing: it failed (each trial says why).
            ended = "succeeded" if any(t["state"] == "complete" for t in trials) else "failed"
            await self.sweeps.set_status(tenant=tenant, sweep_id=sweep_id, status=ended, only_from="running")
            await self.sweeps.finish(tenant=tenant, sweep_id=sweep_id)

    async def _follow(
        self, tenant: str, sweep_id: str, sweep: SweepCreate, study: optuna.Study, trial: dict[str, Any]
    ) -> bool:
        """Bring one running trial up to date; whether it ended."""
        metric, job_id = sweep.objective.metric, trial["job_id"]
        job = await self.jobs.get_job(tenant=tenant, job_id=job_id)
        status = job["status"] if job else "failed"
        records = await self.jobs.metric_records(tenant=tenant, job_id=job_id, since=trial["reported_step"])
        values = [(int(r["epoch"]), float(r[metric])) for r in records if r.get(metric) is not None]
        should_prune = False
        if values:
            should_prune = await asyncio.to_thread(opt.report, study, trial["optuna_number"], values)
            trial["reported_step"] = records[-1]["step"]
            trial["intermediate"] = {**trial.get("intermediate", {}), **{str(e): v for e, v in values}}
        if status in _ENDED:
            trial["state"], state = _ENDED[status]
            value = job.get(metric) if job else None
            if state == TrialState.COMPLETE and not isinstance(value, float):  # none recorded, or not finite
                trial["state"], state = "failed", TrialState.FAIL
                trial["error"] = f"the job ended without a finite {metric} (is there a held-out split?)"
            trial["value"] = value if state == TrialState.COMPLETE else None
            await asyncio.to_thread(opt.tell, study, trial["optuna_number"], state, trial["value"])
        elif should_prune and not trial.get("prune_requested"):
            await self.redis.set(self.jobs.part(tenant, job_id, JobPart.PRUNE), "1", ex=self.settings.job_ttl_s)
            await self._cancel(tenant, job_id)
            trial["prune_requested"] = True
        await self.sweeps.put_trial(tenant=tenant, sweep_id=sweep_id, trial=trial)
        return bool(trial["state"] != "running")

    async def _start(
        self, tenant: str, sweep_id: str, sweep: SweepCreate, study: optuna.Study, *, number: int
    ) -> dict[str, Any] | None:
        """Ask Optuna for a trial and submit it as a job (the same path as POST /v1/jobs)."""
        if await self.jobs.active_count(tenant=tenant) >= self.settings.max_concurrent_jobs:
            return None
        optuna_number, params = await asyncio.to_thread(opt.ask, study, sweep)
        doc = apply_params(trial_template(sweep), params)
        doc["tags"] = [*doc.get("tags", []), f"sweep={sweep_id}"]
        doc["name"] = f"{doc.get('name') or sweep.name or sweep_id} #{number}"
        trial: dict[str, Any] = {"number": number, "optuna_number": optuna_number, "params": params}
        trial.update(job_id=None, state="running", value=None, reported_step=0, error=None)
        try:
            req = JobCreate.model_validate(doc)
            s = self
            trial["job_id"] = await submit(
                req, tenant=tenant, settings=s.settings, store=s.store, jobs=s.jobs, celery=s.celery, sweep=sweep_id
            )
        except TooManyRequests:  # raced another submission to the tenant's last slot
            await asyncio.to_thread(opt.tell, study, optuna_number, TrialState.FAIL)
            return None
        except (GradserveError, ValueError) as exc:
            trial.update(state="failed", error=getattr(exc, "msg", str(exc)))
            await asyncio.to_thread(opt.tell, study, optuna_number, TrialState.FAIL)
        await self.sweeps.put_trial(tenant=tenant, sweep_id=sweep_id, trial=trial)
        # A cancel that landed while this trial was being submitted read the trials before it was stored,
        # so it could not cancel it: the cancel sets the status before reading the trials, and this reads
        # the status after storing the trial, so one of the two always sees the other.
        latest = await self.sweeps.get(tenant=tenant, sweep_id=sweep_id)
        if trial["job_id"] and (latest is None or latest["status"] != "running"):
            await self._cancel(tenant, trial["job_id"])
        return trial

    async def _cancel(self, tenant: str, job_id: str) -> None:
        s = self.settings
        await self.jobs.cancel(tenant=tenant, job_id=job_id, ttl_s=s.job_ttl_s, max_records=s.job_max_records)
