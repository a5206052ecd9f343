"""Celery tasks: thin wrappers that take ids and small specs, and read and write Redis."""

from __future__ import annotations

import os

from models import tasks as names
from worker.celery_app import app


@app.task(name=names.PING)
def ping() -> dict[str, int]:
    return {"pid": os.getpid()}
