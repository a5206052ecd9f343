"""Session calls cut off by a worker's death before it started the call, and by a Redis restart mid-call:
each is answered within a few seconds (the heartbeat's bound), never after a 30 s or a minute-long wait."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from models.store.keys import Keys
from tests.conftest import Service
from tests.faults.conftest import PREFIX, OwnRedis, message_taken_by_a_dying_worker
from tests.integration.jobs_helpers import MLP

pytestmark = [pytest.mark.faults, pytest.mark.integration]
# A correctness bound, far below the 30 s (queue wait) and ~60 s (lock) the stalls lasted.
RECOVERY_S = 10.0
# Heavy enough that a forward on [8, 3, 96, 96] takes a good fraction of a second on one thread.
SLOW = {
    "name": "Slow",
    "input_shape": [3, 96, 96],
    "layers": [
        {"name": "c1", "type": "Conv2d", "in_channels": 3, "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"name": "c2", "type": "Conv2d", "in_channels": 64, "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"name": "c3", "type": "Conv2d", "in_channels": 64, "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"type": "max_pool2d", "kernel_size": 4},  # a small fc: the session's state stays within the quota
        {"type": "flatten", "start_dim": 1},
        {"name": "fc", "type": "Linear", "in_features": 64 * 24 * 24, "out_features": 2},
    ],
}


def answered_within(c: httpx.Client, path: str, body: dict, bound: float) -> httpx.Response:
    """The call's first answer other than a 503, sent again after each 503 until ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while True:
        response = c.post(path, json=body, headers={"Idempotency-Key": "outage-retry-1"})
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_call_taken_by_a_worker_that_died_is_refused_at_once(fault_service: Service, own_redis: OwnRedis) -> None:
    with fault_service.client("carol") as c:
        sid = c.post("/v1/sessions", json={"network": MLP, "seed": 0}).json()["id"]
        body = {"input": [[0.5] * 6]}
        with ThreadPoolExecutor(1) as pool:
            with message_taken_by_a_dying_worker(fault_service, own_redis, "sessions", "sessions-cpu"):
                pending = pool.submit(c.post, f"/v1/sessions/{sid}/forward", json=body)
            killed = time.monotonic()
            refused = pending.result()
            waited = time.monotonic() - killed
        assert refused.status_code == 503, refused.text
        assert "died before starting it" in refused.json()["detail"] and refused.headers["Retry-After"]
        assert waited < RECOVERY_S, waited
        fault_service.wait_workers(2, lane="sessions")
        again = c.post(f"/v1/sessions/{sid}/forward", json=body)
        assert again.status_code == 200, again.text
        assert c.get(f"/v1/sessions/{sid}").json()["version"] == 2  # created, then one forward: never run twice


def test_a_call_cut_off_by_a_redis_restart_does_not_hold_its_session(
    fault_service: Service, own_redis: OwnRedis
) -> None:
    """The call's worker lives on, but its call died with Redis: its lock used to answer 503 "busy with
    another call" to every retry until the lock's TTL ran out (48 s)."""
    r = own_redis.client()
    with fault_service.client("carol") as c:
        fault_service.wait_workers(2, lane="sessions")
        sid = c.post("/v1/sessions", json={"network": SLOW, "seed": 0}).json()["id"]
        lock = Keys(PREFIX).session_lock("carol", sid)
        log_before = fault_service.log.read_text().count("raised unexpected")
        body = {"input": {"randn": [8, 3, 96, 96]}}
        with ThreadPoolExecutor(1) as pool:
            cut = pool.submit(c.post, f"/v1/sessions/{sid}/forward", json=body)
            deadline = time.monotonic() + 60
            while not r.exists(lock):
                assert time.monotonic() < deadline, "the call never took its session's lock"
                time.sleep(0.005)
            own_redis.kill()
            try:
                assert cut.result().status_code == 503
                # The worker finishes computing, then fails to write its answer and release the lock.
                deadline = time.monotonic() + 60
                while fault_service.log.read_text().count("raised unexpected") == log_before:
                    assert time.monotonic() < deadline, fault_service.log.read_text()[-3000:]
                    time.sleep(0.1)
            finally:
                own_redis.start()
        answer = answered_within(c, f"/v1/sessions/{sid}/forward", body, RECOVERY_S)
        assert answer.status_code == 200, answer.text
