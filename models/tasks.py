"""The Celery contract between the API and the workers: task names, queues and broker settings.

Task names are constants, not import paths, so moving a module never renames a task; the API
sends by name and never imports the worker. Arguments are ids and small JSON specs, never tensors.
"""

from __future__ import annotations

from typing import Any

from models.settings import Settings
from models.store.keys import Keys

SESSION_CALL = "gradserve.session.call"
JOB_RUN = "gradserve.job.run"

QUEUE_CPU = "cpu"
QUEUE_GPU = "gpu"
# Interactive session calls have their own lane: queues served by their own worker processes, so a
# call never waits behind a training step.
QUEUE_SESSIONS_CPU = "sessions-cpu"
QUEUE_SESSIONS_GPU = "sessions-gpu"
LANE_JOBS = "jobs"
LANE_SESSIONS = "sessions"
LANE_QUEUES = {LANE_JOBS: (QUEUE_CPU, QUEUE_GPU), LANE_SESSIONS: (QUEUE_SESSIONS_CPU, QUEUE_SESSIONS_GPU)}


def lane_queues(lane: str, *, gpu: bool) -> str:
    """The queues a worker of ``lane`` consumes, comma-separated: the GPU one only where CUDA is."""
    cpu_queue, gpu_queue = LANE_QUEUES[lane]
    return f"{cpu_queue},{gpu_queue}" if gpu else cpu_queue


def place(lane: str, requested: str, workers: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The device and queue for work of ``lane`` asking for ``requested`` ("auto", "cpu" or "cuda"), among the
    live ``workers``: the lane's GPU queue when asked, or for "auto" when a live worker of the lane has CUDA
    and consumes it; None when "cuda" is asked and none does (the API refuses instead of queueing forever)."""
    cpu_queue, gpu_queue = LANE_QUEUES[lane]
    gpu = any(w.get("device") == "cuda" and gpu_queue in w.get("queues", []) for w in workers)
    if requested == "cuda" and not gpu:
        return None
    device = "cuda" if requested == "cuda" or (requested == "auto" and gpu) else "cpu"
    return device, gpu_queue if device == "cuda" else cpu_queue


def lanes_of(queues: list[str]) -> list[str]:
    """The lanes a worker consuming ``queues`` serves."""
    return [lane for lane, names in LANE_QUEUES.items() if any(q in names for q in queues)]


# Longer than any job may run between heartbeats is not needed: a running job holds a lease in
# Redis, so a redelivery after this timeout finds the lease and does not run it a second time.
VISIBILITY_TIMEOUT_S = 3600


def celery_config(settings: Settings) -> dict[str, Any]:
    """One configuration for producer (API) and consumer (worker), so they cannot drift."""
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        # Celery's own keys (queues, ``unacked``) under our prefix too, so two deployments can share a Redis.
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "global_keyprefix": Keys(settings.key_prefix).celery_prefix(),
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # Answers travel through our own reply keys (models.store.keys.Keys.reply), not Celery's backend.
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE_CPU,
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def broker_queue_key(settings: Settings, queue: str) -> str:
    """The Redis list Celery's transport keeps a queue's messages in (priority 0, the only one we use)."""
    return Keys(settings.key_prefix).celery_prefix() + queue
