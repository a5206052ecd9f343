"""The Celery contract between the API and the workers: task names and broker settings (lanes and queues:
models.placement).

Task names are constants, not import paths, so moving a module never renames a task; the API
sends by name and never imports the worker. Arguments are ids and small JSON specs, never tensors.
"""

from __future__ import annotations

from typing import Any

from models.placement import QUEUE_CPU
from models.settings import Settings
from models.store.keys import Keys

SESSION_CALL = "gradserve.session.call"
JOB_RUN = "gradserve.job.run"
JOB_EXPORT = "gradserve.job.export"

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
