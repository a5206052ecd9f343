"""Redis killed mid-job and restarted from its AOF: 503s with Retry-After while it is gone, the job
finishes with every step once, no 500 afterwards; and what the service writes stays under its prefix."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Service
from tests.faults.conftest import PASSWORD, PREFIX, OwnRedis
from tests.integration.jobs_helpers import MLP, mlp_job, submit, wait_final, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]

DURING_OUTAGE = [
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/usage", None),
    ("POST", "/v1/networks", MLP),
    ("POST", "/v1/jobs", mlp_job(steps=3)),
    ("POST", "/v1/sessions", {"network": MLP, "seed": 0}),
]


def test_redis_killed_and_restarted_mid_job(fault_service: Service, own_redis: OwnRedis) -> None:
    with fault_service.client("alice") as alice:
        fault_service.wait_workers(2)
        job_id = submit(alice, mlp_job(steps=1500, capture={"checkpoint_every": 100}))
        wait_until(alice, job_id, lambda d: d["status"] == "running" and d["step"] >= 100)
        # Fill the API's Redis pool with connections that the restart will leave stale.
        assert all(r.status_code == 200 for r in at_once(alice, [("GET", "/v1/usage", None)] * 16))
        own_redis.kill()
        try:
            for method, path, body in [*DURING_OUTAGE, ("GET", f"/v1/jobs/{job_id}", None)]:
                response = alice.request(method, path, json=body)
                assert response.status_code == 503, (method, path, response.text)
                assert "Redis" in response.json()["detail"] and int(response.headers["retry-after"]) > 0
            ready = alice.get("/readyz")
            assert ready.status_code == 503 and int(ready.headers["retry-after"]) > 0, ready.text
            time.sleep(1)
        finally:
            own_redis.start()
        done = wait_final(alice, job_id, timeout=120)
        assert done["status"] == "succeeded", done
        assert alice.get(f"/v1/jobs/{job_id}/metrics").json()["step"] == list(range(1, 1501))
        # After recovery nothing fails, not even with a 503: Redis is back. Many requests at once, so they
        # take many of the API's pooled connections, each opened before the restart: the pool must
        # reconnect each one before use (it once skipped that check, and the first command on each
        # stale connection answered 503 "Connection closed by server").
        failed = [r for r in at_once(alice, DURING_OUTAGE[:3] * 10) if r.status_code >= 500]
        assert not failed, [(r.request.url.path, r.status_code, r.text[:200]) for r in failed]


def at_once(client: httpx.Client, requests: list[tuple[str, str, object]]) -> list[httpx.Response]:
    """``requests`` sent 8 at a time: the API serves them on as many of its pooled Redis connections."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda req: client.request(req[0], req[1], json=req[2]), requests))


def test_every_key_under_the_prefix_and_url_redacted(fault_service: Service, own_redis: OwnRedis) -> None:
    with fault_service.client("alice") as alice:
        assert wait_final(alice, submit(alice, mlp_job(steps=3)))["status"] == "succeeded"
    names = [k.decode() for k in own_redis.client().keys("*")]
    assert names and all(n.startswith(f"{PREFIX}:") for n in names), [n for n in names if not n.startswith(PREFIX)]
    log = fault_service.log.read_text()
    assert "using Redis at redis://:***@127.0.0.1" in log and PASSWORD not in log
