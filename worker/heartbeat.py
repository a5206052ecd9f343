"""A worker's presence in Redis: a key with a TTL, refreshed from a daemon thread.

The API reads these to answer ``/readyz`` and to refuse ``device: cuda`` when no GPU worker is alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

import redis
import torch

from launcher.threads import usable_cores
from models.placement import lanes_of
from models.store.keys import Keys


def describe_device() -> dict[str, object]:
    if torch.cuda.is_available():
        return {"device": "cuda", "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    return {"device": "cpu", "gpus": []}


RETRY_S = 0.5


class Heartbeat:
    def __init__(self, client: redis.Redis, keys: Keys, *, name: str, queues: list[str], ttl_s: int) -> None:
        self.client = client
        self.key = keys.worker(name)
        self.ttl_s = ttl_s
        self.doc = {
            "name": name,
            "pid": os.getpid(),
            "queues": queues,
            "lanes": lanes_of(queues),
            "started_at": time.time(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cores": usable_cores(),  # beside threads: an operator sees at once how this host is shared
            **describe_device(),
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gradserve-heartbeat", daemon=True)

    def beat(self) -> None:
        self.client.set(self.key, json.dumps({**self.doc, "beat_at": time.time()}), ex=self.ttl_s)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(redis.RedisError):  # shutting down; the key expires on its own anyway
            self.client.delete(self.key)

    def _run(self) -> None:
        pause = self.ttl_s / 3
        while not self._stop.wait(pause):
            try:
                self.beat()
                pause = self.ttl_s / 3
            except redis.RedisError:
                # Redis is away (the TTL says we are gone meanwhile): try again soon, so that once it is
                # back the API sees this worker within a moment, not a third of the TTL later, and does
                # not refuse sessions with "no session worker is alive" while workers wait to beat.
                pause = RETRY_S
