"""Synchronous calls from the API to a worker: publish a Celery task by name, block on its reply key.

Calls on one session are serialised in arrival order by an asyncio lock per session (FIFO), so a
client that fires ``forward`` then ``backward`` without waiting still gets them in that order; the
worker also takes a Redis lock, which keeps several API processes in order among themselves.
Tensors ride in the task's arguments only when tiny; larger ones go to Redis under a call key.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import torch
from redis.asyncio import Redis

from api.broker import task_message
from models.errors import GradserveError, NotFound, Timeout
from models.settings import Settings
from models.store.keys import Keys
from models.tasks import SESSION_CALL, broker_queue_key
from models.wire.tensors import to_safetensors

# Above this many bytes a tensor goes to Redis by key: the broker base64-encodes messages twice over.
INLINE_MAX_BYTES = 64 * 1024
_ROUTES_KEPT = 100_000


@dataclass(frozen=True)
class Reply:
    body: bytes
    media: str = "application/json"
    worker_ms: float = 0.0  # time the worker spent on the call
    call_ms: float = 0.0  # enqueue to answer, as the API saw it

    @property
    def server_timing(self) -> str:
        return f"worker;dur={self.worker_ms:.3f}, call;dur={self.call_ms:.3f}"


class SessionCalls:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis, self.keys, self.settings = redis, keys, settings
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}
        self._queues: OrderedDict[tuple[str, str], str] = OrderedDict()

    # --- routing ---
    def remember(self, tenant: str, sid: str, queue: str) -> None:
        self._queues[(tenant, sid)] = queue
        while len(self._queues) > _ROUTES_KEPT:
            self._queues.popitem(last=False)

    def forget(self, tenant: str, sid: str) -> None:
        self._queues.pop((tenant, sid), None)

    async def queue_of(self, tenant: str, sid: str) -> str:
        """The queue a session's calls go to (its device's); a missing or foreign session is a 404."""
        queue = self._queues.get((tenant, sid))
        if queue is None:
            raw = await self.redis.hget(self.keys.session(tenant, sid), "queue")
            if raw is None:
                raise NotFound(f"session '{sid}' not found")
            queue = raw.decode()
            self.remember(tenant, sid, queue)
        return queue

    @asynccontextmanager
    async def serial(self, tenant: str, sid: str) -> AsyncIterator[None]:
        """Hold the session's place in line; asyncio.Lock wakes waiters in the order they came."""
        key = (tenant, sid)
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(key, None)

    # --- the call ---
    async def call(
        self,
        *,
        tenant: str,
        sid: str,
        op: str,
        args: dict[str, Any] | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
        blobs: dict[str, bytes] | None = None,
        queue: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Reply:
        """Run ``op`` on a worker and return its answer; worker errors are re-raised with their status."""
        queue = queue or await self.queue_of(tenant, sid)
        call_id = uuid.uuid4().hex
        refs: dict[str, dict[str, Any]] = {}
        uploads: dict[str, bytes] = {}
        for name, tensor in (tensors or {}).items():
            blob = to_safetensors({"t": tensor})
            if len(blob) <= INLINE_MAX_BYTES:
                refs[name] = {"wire": base64.b64encode(blob).decode("ascii")}
            else:
                uploads[name] = blob
                refs[name] = {"key": self.keys.call_blob(call_id, name)}
        for name, blob in (blobs or {}).items():
            uploads[name] = blob
            refs[name] = {"key": self.keys.call_blob(call_id, name), "raw": True}
        async with self.serial(tenant, sid):
            if uploads:
                pipe = self.redis.pipeline(transaction=False)
                for name, blob in uploads.items():
                    pipe.set(self.keys.call_blob(call_id, name), blob, ex=int(self.settings.call_timeout_s) + 60)
                await pipe.execute()
            deadline = time.time() + self.settings.call_timeout_s
            payload = {
                "call_id": call_id,
                "tenant": tenant,
                "session_id": sid,
                "op": op,
                "args": args or {},
                "tensors": refs,
                "deadline": deadline,
                **(extra or {}),
            }
            sent = time.perf_counter()
            message = task_message(
                SESSION_CALL,
                payload,
                task_id=call_id,
                queue=queue,
                kwargsrepr=f"{{'op': {op!r}, 'session_id': {sid!r}}}",
            )
            # Publish and wait in one round trip: BLPOP in a pipeline blocks like a lone BLPOP.
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(broker_queue_key(self.settings, queue), message)
            pipe.blpop([self.keys.reply(call_id)], timeout=self.settings.call_timeout_s)
            _, got = await pipe.execute()
        if got is None:
            raise Timeout(
                f"no worker answered '{op}' on session '{sid}' within {self.settings.call_timeout_s:g} s "
                "(GRADSERVE_CALL_TIMEOUT_S); are the workers alive? see GET /readyz"
            )
        return _decode(got[1], (time.perf_counter() - sent) * 1e3)


def _decode(frame: bytes, call_ms: float) -> Reply:
    kind = frame[:1]
    spent, _, rest = frame[1:].partition(b"\n")
    if kind == b"j":
        return Reply(rest, worker_ms=float(spent), call_ms=call_ms)
    if kind == b"r":
        media, _, body = rest.partition(b"\n")
        return Reply(body, media.decode(), worker_ms=float(spent), call_ms=call_ms)
    raise GradserveError.from_dict(orjson.loads(rest))
