"""Work the API hands to a session worker and waits for: exports and TensorBoard archives (``worker.exports``).

Like a session call (``api.calls``), the task is published by name onto the sessions lane's CPU queue and
answered on a reply key; the API gives up with a 503 when no worker takes it in time (the attempt is then
marked abandoned, so it never runs later) and with a 504 past GRADSERVE_EXPORT_TIMEOUT_S, the deadline the
worker stops at too. Requests for the same file in one API process wait for one another (a lock per file),
and the worker looks in the artifact store before making it, so two requests make it once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson

from api.broker import task_message
from api.calls import ENQUEUE, SessionCalls, Waiting
from api.turns import Turns
from models.errors import ServiceUnavailable, Timeout
from models.placement import LANE_SESSIONS, place
from models.store.redis import Store
from models.store.replies import as_bytes, text
from models.tasks import JOB_EXPORT, broker_queue_key
from models.wire.session import ABANDONED, error_frame, heartbeat_stale, read_frame, stamp

# How long past the worker's own deadline the API waits for the worker's 504 (with its message) to arrive.
_GRACE_S = 2.0
_files = Turns()


@asynccontextmanager
async def one_at_a_time(*name: str) -> AsyncIterator[None]:
    """Hold the turn for one file; a second request for it waits here, then finds the file made."""
    async with _files.hold(name):
        yield


async def run_on_worker(
    calls: SessionCalls, store: Store, what: str, call: dict[str, Any], gone: Callable[[], Awaitable[bool]]
) -> dict[str, Any]:
    """Publish ``call`` (``kind``, ``tenant``, ``job_id``, ...) as a JOB_EXPORT task and return the worker's
    answer (JSON; it names the ``worker``); a worker's error is raised again with its status. ``gone`` says
    whether the client hung up: then a task no worker took yet is abandoned (never run), and one running
    ends at its deadline on the worker."""
    settings, redis, keys = calls.settings, calls.redis, calls.keys
    queue = place(LANE_SESSIONS, "cpu", await store.live_workers()).queue
    attempt = uuid.uuid4().hex
    payload = {**call, "attempt": attempt, "deadline": time.time() + settings.export_timeout_s}
    message = task_message(JOB_EXPORT, payload, task_id=attempt, queue=queue, kwargsrepr=repr(call))
    reply, claim_key = keys.reply(attempt), keys.call_claim(attempt)
    full = stamp(
        error_frame(
            ServiceUnavailable(
                f"{settings.session_queue_max} calls already wait for a session worker "
                f"(GRADSERVE_SESSION_QUEUE_MAX); the {what} was not started; retry shortly",
                retry_after=1,
            )
        ),
        0,
    )
    broker_queue = broker_queue_key(settings, queue)
    await redis.eval(ENQUEUE, 2, broker_queue, reply, message, settings.session_queue_max, full, 60)
    waiting = Waiting(broker_queue, message.decode())
    sent = time.perf_counter()
    claim_ttl = int(settings.export_timeout_s) + 60
    while True:
        try:
            got = await redis.blpop([reply], timeout=calls.slice_s)
        except asyncio.CancelledError:
            await redis.set(claim_key, ABANDONED, nx=True, ex=claim_ttl)
            raise
        if got is not None:
            return dict(orjson.loads(read_frame(as_bytes(got[1])).body))
        waited = time.perf_counter() - sent
        claim = await redis.get(claim_key)
        if await gone():
            await redis.set(claim_key, ABANDONED, nx=True, ex=claim_ttl)
            raise ServiceUnavailable(f"the client hung up before the {what} was made", retry_after=1)
        if claim is None and (await calls.lost(waiting) or waited >= settings.session_queue_wait_s):
            if await redis.set(claim_key, ABANDONED, nx=True, ex=claim_ttl):
                raise ServiceUnavailable(
                    f"no session worker took the {what} within {waited:.0f} s (GRADSERVE_SESSION_QUEUE_WAIT_S): "
                    "all are busy or none is alive (see GET /readyz); it was not started; retry shortly",
                    retry_after=2,
                )
            continue  # a worker took it just now
        alive_ttl = settings.worker_heartbeat_ttl_s
        if (
            claim is not None
            and text(claim) != ABANDONED
            and heartbeat_stale(await redis.pttl(keys.worker(text(claim))), alive_ttl)
        ):
            raise ServiceUnavailable(f"the worker making the {what} died (its heartbeat stopped)", retry_after=1)
        if waited >= settings.export_timeout_s + _GRACE_S:
            raise Timeout(
                f"the {what} was not made within {settings.export_timeout_s:g} s (GRADSERVE_EXPORT_TIMEOUT_S)",
                retry_after=5,
            )
