"""Synchronous calls from the API to a worker: publish a Celery task by name, block on its reply key.

Calls on one session are serialised in arrival order by an asyncio lock per session (FIFO), so a
client that fires ``forward`` then ``backward`` without waiting still gets them in that order; the
worker also takes a Redis lock, which keeps several API processes in order among themselves.
Tensors ride in the task's arguments only when tiny; larger ones go to Redis under a call key
(the protocol itself lives in ``models.wire.session``).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from redis.asyncio import Redis

from api.broker import task_message
from api.turns import Turns
from models.errors import NotFound, ServiceUnavailable, Timeout
from models.settings import Settings
from models.store.keys import Keys
from models.store.replies import as_bytes, text
from models.tasks import SESSION_CALL, broker_queue_key
from models.wire.session import (
    ABANDONED,
    Reply,
    error_frame,
    heartbeat_stale,
    raw_ref,
    read_frame,
    stamp,
    tensor_ref,
)

_ROUTES_KEPT = 100_000
# Publish a call unless its queue already holds the most calls allowed to wait: then the refusal
# goes straight onto the call's reply key, where the API's BLPOP (same round trip) finds it.
ENQUEUE = """
if redis.call('llen', KEYS[1]) >= tonumber(ARGV[2]) then
  redis.call('lpush', KEYS[2], ARGV[3])
  redis.call('expire', KEYS[2], ARGV[4])
  return 0
end
redis.call('lpush', KEYS[1], ARGV[1])
return 1
"""


@dataclass
class Waiting:
    """A published call's message, looked for in its queue while no worker has claimed the call."""

    queue: str
    message: str  # as LPUSHed; redis-py encodes it back to the same UTF-8 bytes
    gone_since: float | None = None  # when the message was first seen out of the queue, unclaimed


class SessionCalls:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis, self.keys, self.settings = redis, keys, settings
        self._turns = Turns()
        self._queues: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._line_full = stamp(
            error_frame(
                ServiceUnavailable(
                    f"{settings.session_queue_max} session calls are already waiting for a worker "
                    "(GRADSERVE_SESSION_QUEUE_MAX); the call was not run; retry shortly",
                    retry_after=1,
                )
            ),
            0,
        )

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
            queue = text(raw)
            self.remember(tenant, sid, queue)
        return queue

    @asynccontextmanager
    async def serial(self, tenant: str, sid: str) -> AsyncIterator[None]:
        """Hold the session's place in line; asyncio.Lock wakes waiters in the order they came."""
        async with self._turns.hold((tenant, sid)):
            yield

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
        binary: bool = False,
        call_id: str | None = None,
    ) -> Reply:
        """Run ``op`` on a worker and return its answer; worker errors are re-raised with their status.

        ``call_id`` (the client's Idempotency-Key) makes a retry of an applied call answer as the first
        time did; every send of the call is a fresh attempt, with its own reply key and claim.
        """
        queue = queue or await self.queue_of(tenant, sid)
        attempt = uuid.uuid4().hex
        call_id = call_id or attempt
        refs: dict[str, dict[str, Any]] = {}
        uploads: dict[str, bytes] = {}
        for name, tensor in (tensors or {}).items():
            refs[name], blob = tensor_ref(tensor, self.keys.call_blob(attempt, name))
            if blob is not None:
                uploads[name] = blob
        for name, blob in (blobs or {}).items():
            uploads[name] = blob
            refs[name] = raw_ref(self.keys.call_blob(attempt, name))
        async with self.serial(tenant, sid):
            if uploads:
                pipe = self.redis.pipeline(transaction=False)
                for name, blob in uploads.items():
                    pipe.set(self.keys.call_blob(attempt, name), blob, ex=int(self.settings.call_timeout_s) + 60)
                await pipe.execute()
            payload = {
                "call_id": call_id,
                "attempt": attempt,
                "tenant": tenant,
                "session_id": sid,
                "op": op,
                "args": args or {},
                "tensors": refs,
                "deadline": time.time() + self.settings.call_timeout_s,
                "binary": binary,
                **(extra or {}),
            }
            sent = time.perf_counter()
            message = task_message(
                SESSION_CALL,
                payload,
                task_id=attempt,
                queue=queue,
                kwargsrepr=f"{{'op': {op!r}, 'session_id': {sid!r}}}",
            )
            # Publish (unless the line is full) and wait in one round trip: BLPOP in a pipeline blocks
            # like a lone BLPOP. The wait is cut into slices, so no socket timeout ever cuts it, and
            # between slices the API looks at the call's worker.
            reply = self.keys.reply(attempt)
            pipe = self.redis.pipeline(transaction=False)
            pipe.eval(
                ENQUEUE,
                2,
                broker_queue_key(self.settings, queue),
                reply,
                message,
                self.settings.session_queue_max,
                self._line_full,
                60,
            )
            pipe.blpop([reply], timeout=self.slice_s)
            _, got = await pipe.execute()
            if got is None:
                got = await self._wait(
                    op, sid, attempt, sent, Waiting(broker_queue_key(self.settings, queue), message.decode())
                )
        return replace(read_frame(got[1], (time.perf_counter() - sent) * 1e3), call_id=call_id)

    @property
    def slice_s(self) -> float:
        return min(1.0, self.settings.worker_heartbeat_ttl_s / 6)

    async def _wait(self, op: str, sid: str, attempt: str, sent: float, waiting: Waiting) -> tuple[bytes, bytes]:
        """Wait on for the answer, ending the call early when no worker takes it in time, the worker that
        took its message died before claiming it, or the worker running it died."""
        settings, reply, claim_key = self.settings, self.keys.reply(attempt), self.keys.call_claim(attempt)
        while True:
            waited = time.perf_counter() - sent
            claim = await self.redis.get(claim_key)
            if claim is None and await self.lost(waiting):
                if await self.redis.set(claim_key, ABANDONED, nx=True, ex=int(settings.call_timeout_s) + 60):
                    raise ServiceUnavailable(
                        f"the session worker that took '{op}' off the queue died before starting it; "
                        "the call was not run; retry shortly",
                        retry_after=1,
                    )
                continue  # a worker took it just now
            if claim is None and waited >= min(settings.session_queue_wait_s, settings.call_timeout_s):
                if await self.redis.set(claim_key, ABANDONED, nx=True, ex=int(settings.call_timeout_s) + 60):
                    raise ServiceUnavailable(
                        f"no session worker took '{op}' within {waited:.0f} s (GRADSERVE_SESSION_QUEUE_WAIT_S): "
                        "all are busy or none is alive (see GET /readyz); the call was not run; retry shortly",
                        retry_after=2,
                    )
                continue  # a worker took it just now
            if claim is not None and text(claim) != ABANDONED:
                pttl = await self.redis.pttl(self.keys.worker(text(claim)))
                if heartbeat_stale(pttl, settings.worker_heartbeat_ttl_s):
                    raise ServiceUnavailable(
                        f"the worker running '{op}' on session '{sid}' died during the call (its heartbeat "
                        "stopped); the session is as its last completed call left it; retry the call",
                        retry_after=1,
                    )
            if waited >= settings.call_timeout_s:
                raise Timeout(
                    f"no answer to '{op}' on session '{sid}' within {settings.call_timeout_s:g} s "
                    "(GRADSERVE_CALL_TIMEOUT_S); the call may still complete: retry it with the same "
                    "Idempotency-Key to get its answer without applying it twice",
                    retry_after=5,
                )
            got = await self.redis.blpop([reply], timeout=self.slice_s)
            if got is not None:
                key, frame = got
                return as_bytes(key), as_bytes(frame)

    async def lost(self, waiting: Waiting) -> bool:
        """Whether the call's message left its queue without any worker claiming the call, a whole slice
        ago or more: a live worker claims within milliseconds of taking it, so the one that took it died.

        A SIGKILLed worker's sockets outlive it while the kernel tears down its memory, and meanwhile
        Redis hands the next message to its pending BRPOP; without this, that call waited out
        GRADSERVE_SESSION_QUEUE_WAIT_S (30 s) for a worker that would never claim it.
        """
        if await self.redis.lpos(waiting.queue, waiting.message) is not None:
            return False
        now = time.perf_counter()
        if waiting.gone_since is None:
            waiting.gone_since = now
        return now - waiting.gone_since >= self.slice_s
