"""The sweeper: the process that drives sweeps (``gradserve sweeper``), one leader at a time.

Sweeps are driven outside the API so that API processes only answer requests: scaling the API out no
longer multiplies pollers, and a slow Optuna call never delays an answer. Any number of sweepers may run
(``gradserve up`` starts one, compose runs one per host it is scaled to); the one holding the leader lease
drives every active sweep, the others stand by and take over within ``sweep_lease_ttl_s`` of its death.
Everything a sweep needs is in Redis, so a new leader carries on where the old one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import uuid

from celery import Celery
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.sweep_controller import SweepController
from models.settings import Settings, get_settings
from models.store.connect import redis_options
from models.store.keys import Keys
from models.store.leases import Leases
from models.store.redis import Store
from models.tasks import celery_config

log = logging.getLogger("gradserve.sweeper")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Lead when the lease is free, drive the sweeps every ``sweep_poll_s`` while leading, until ``stop``."""
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url, **redis_options(settings))
    producer = Celery("gradserve-sweeper")
    producer.conf.update(celery_config(settings))
    store = Store(redis, Keys(settings.key_prefix))
    controller = SweepController(redis, store, producer, settings)
    leases, key = Leases(redis), store.keys.sweeper_leader()
    me = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex})
    leading = asyncio.Event()

    async def keep_lease() -> None:
        # Renewed on its own beat, not between ticks: a slow tick on a loaded host must not let the lease
        # lapse under a leader that is still driving.
        while not stop.is_set():
            try:
                held = await leases.hold(key, me, settings.sweep_lease_ttl_s)
            except Exception:
                log.exception("sweeper lease renewal failed")
                held = False
            if held != leading.is_set():
                log.warning("sweeper %d %s", os.getpid(), "leads" if held else "stands by")
                if held:
                    leading.set()
                else:
                    leading.clear()
            await _pause(stop, settings.sweep_lease_ttl_s / 3)

    renewer = asyncio.create_task(keep_lease())
    try:
        while not stop.is_set():
            if leading.is_set():
                try:
                    await controller.tick()
                except Exception:  # a Redis outage or a bug in one tick must not end the loop
                    log.exception("sweeper tick failed")
            await _pause(stop, settings.sweep_poll_s)
    finally:
        renewer.cancel()
        with contextlib.suppress(RedisError, OSError):  # a standby takes over at once, not after the lease
            await leases.release(key, me)
        producer.close()
        await redis.aclose()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def run() -> int:
    settings = get_settings()
    if settings.redis_url is None:
        print("gradserve: REDIS_URL is not set: start the service with `gradserve up`, or set REDIS_URL")
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
    return 0
