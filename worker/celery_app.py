"""The Celery application of the workers. Start with ``gradserve worker`` (or ``celery -A worker.celery_app``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from models.settings import get_settings
from models.store.connect import redis_options
from models.store.keys import Keys
from models.tasks import celery_config
from worker.heartbeat import Heartbeat

settings = get_settings()
app = Celery("gradserve")
app.conf.update(celery_config(settings))
# Importing the task modules registers them; they are thin wrappers around plain PyTorch code.
app.conf.update(include=["worker.tasks"])


@lru_cache
def redis_client() -> redis.Redis:
    """One connection pool per worker process, made on first use rather than at import."""
    if settings.redis_url is None:
        raise RuntimeError("REDIS_URL is not set: start the worker through `gradserve up` or set REDIS_URL")
    return redis.Redis.from_url(settings.redis_url, **redis_options(settings))


keys = Keys(settings.key_prefix)
_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _start_heartbeat(sender: Any, **_: object) -> None:
    global _heartbeat
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender else []
    _heartbeat = Heartbeat(
        redis_client(), keys, name=sender.hostname, queues=queues, ttl_s=settings.worker_heartbeat_ttl_s
    )
    _heartbeat.start()


@worker_shutdown.connect
def _stop_heartbeat(**_: object) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
