"""Celery tasks: thin wrappers that take ids and small specs, and read and write Redis."""

from __future__ import annotations

from typing import Any

from models import tasks as names
from worker import reaper  # noqa: F401  (connects the orphaned-job reaper to worker start-up)
from worker.celery_app import app, keys, redis_client, settings
from worker.exports import handle as handle_export
from worker.jobs import run_job as _run_job
from worker.session_calls import handle as handle_session_call


@app.task(name=names.SESSION_CALL, bind=True)
def session_call(self: Any, **call: Any) -> None:
    """One call on a session; the answer goes to the caller's reply key, not to Celery's result backend."""
    handle_session_call(redis_client(), keys, settings, call, worker=self.request.hostname or "")


@app.task(name=names.JOB_EXPORT, bind=True)
def job_export(self: Any, **call: Any) -> None:
    """An export or TensorBoard archive of a job; where it is goes to the caller's reply key."""
    handle_export(redis_client(), keys, settings, call, worker=self.request.hostname or "")


@app.task(name=names.JOB_RUN, bind=True)
def run_job(self: Any, tenant: str, job_id: str) -> str:
    """A whole training run; safe to deliver twice (a lease in Redis lets one run at a time)."""
    return _run_job(redis_client(), keys, settings, tenant=tenant, job_id=job_id, worker=self.request.hostname or "")
