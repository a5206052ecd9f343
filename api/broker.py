"""Publish a Celery task from the event loop: a protocol-2 task message pushed onto kombu's Redis list.

Celery's ``send_task`` is synchronous: each call builds a fresh Redis client, blocks the event loop
for the LPUSH round trip and ``saferepr``s the arguments, about 0.6 ms idle and several times that
on a busy box, per session call. The message below is exactly what ``send_task`` writes for a task
sent by name to a queue on the Redis transport (priority 0: the list named after the queue), so
the workers' ordinary consumer takes it once LPUSHed there (``api.calls`` does, in the same
pipeline as its BLPOP for the reply); ``tests/unit/test_broker.py`` pins the format against
Celery's own. Jobs, which are sent rarely, keep using ``send_task``.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from typing import Any

import orjson

_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(name: str, kwargs: dict[str, Any], *, task_id: str, queue: str, kwargsrepr: str) -> bytes:
    body = orjson.dumps([[], kwargs, _EMBED])
    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": kwargsrepr,
        "origin": _ORIGIN,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": task_id,
        "reply_to": "",
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    return orjson.dumps(
        {
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    )
