"""The API's own task message is the message Celery's ``send_task`` writes, so workers take it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import redis
from celery import Celery

from api.broker import task_message
from launcher.embedded_redis import start_redis
from models.placement import QUEUE_CPU
from models.settings import Settings
from models.tasks import SESSION_CALL, broker_queue_key, celery_config

# Fields that differ on every message by design.
_VOLATILE = {("properties", "delivery_tag"), ("properties", "reply_to"), ("headers", "origin")}


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    proc, url = start_redis(Path(tmp_path_factory.mktemp("redis")))
    yield url
    proc.terminate()
    proc.wait()


def _strip(message: dict) -> dict:
    out = json.loads(json.dumps(message))
    for section, key in _VOLATILE:
        out[section].pop(key, None)
    out["properties"].pop("argsrepr", None)  # a copy of the header kombu adds; workers read the header
    out["properties"].pop("kwargsrepr", None)
    out["body"] = json.loads(base64.b64decode(out["body"]))
    return out


def test_message_matches_send_task(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    kwargs = {"call_id": "c1", "op": "forward", "args": {"x": [1.5, 2]}, "deadline": 1.0}
    celery = Celery("gradserve-api")
    settings = Settings(redis_url=redis_url)
    celery.conf.update(celery_config(settings))
    celery.send_task(SESSION_CALL, kwargs=kwargs, queue=QUEUE_CPU, task_id="t1", argsrepr="()", kwargsrepr="r")
    # Celery's keys live under GRADSERVE_KEY_PREFIX too, where api.calls pushes its messages.
    queue_key = broker_queue_key(settings, QUEUE_CPU)
    assert queue_key.startswith(f"{settings.key_prefix}:")
    assert all(k.decode().startswith(f"{settings.key_prefix}:") for k in client.keys("*"))
    theirs = json.loads(client.rpop(queue_key))

    client.lpush(queue_key, task_message(SESSION_CALL, kwargs, task_id="t1", queue=QUEUE_CPU, kwargsrepr="r"))
    mine = json.loads(client.rpop(queue_key))
    assert _strip(mine) == _strip(theirs)
    assert client.llen(queue_key) == 0
