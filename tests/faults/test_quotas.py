"""Quotas under races: concurrent jobs per tenant taken atomically; storage per tenant; a full Redis."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

from tests.conftest import Service
from tests.faults.conftest import QUOTA_BYTES, OwnRedis
from tests.integration.jobs_helpers import mlp_job, wait_final

pytestmark = [pytest.mark.faults, pytest.mark.integration]
OCTETS = {"content-type": "application/octet-stream"}


def test_twenty_simultaneous_submissions_with_quota_four(fault_service: Service) -> None:
    answers: list[httpx.Response] = []
    start = threading.Barrier(20)

    def one(seed: int) -> None:
        with fault_service.client("carol") as c:
            start.wait()
            answers.append(c.post("/v1/jobs", json=mlp_job(steps=100_000, seed=seed)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 4 + [429] * 16, codes
    assert all(a.headers.get("retry-after") for a in answers if a.status_code == 429)
    with fault_service.client("carol") as c:
        for a in answers:
            if a.status_code == 202:
                c.post(f"/v1/jobs/{a.json()['id']}/cancel")
                assert wait_final(c, a.json()["id"])["status"] == "cancelled"


def _dataset(mib: int) -> bytes:
    import io

    buf = io.BytesIO()
    rows = mib * 2**20 // (8 * 16)
    np.savez(buf, inputs=np.zeros((rows, 16)), targets=np.zeros(rows, dtype=np.int64))
    return buf.getvalue()


def test_storage_quota_per_tenant_and_delete_frees_it(fault_service: Service) -> None:
    blob = _dataset(7)
    with fault_service.client("dave") as dave:
        made = []
        while True:
            response = dave.post("/v1/datasets", content=blob, headers=OCTETS)
            if response.status_code != 201:
                break
            made.append(response.json()["id"])
        assert response.status_code == 413 and "GRADSERVE_TENANT_STORAGE_BYTES" in response.json()["detail"]
        assert "stopped midway" in response.json()["detail"]  # streamed: stopped at the quota, not stored first
        assert len(made) == QUOTA_BYTES // len(blob)
        usage = dave.get("/v1/usage").json()
        assert usage["datasets"]["count"] == len(made) and usage["bytes"] <= QUOTA_BYTES
        assert dave.delete(f"/v1/datasets/{made[0]}").status_code == 204
        assert dave.post("/v1/datasets", content=blob, headers=OCTETS).status_code == 201


def test_full_redis_is_507_and_nothing_is_stored(fault_service: Service, own_redis: OwnRedis) -> None:
    r = own_redis.client()
    blob = _dataset(3)
    with fault_service.client("bob") as bob:
        before = bob.get("/v1/usage").json()["datasets"]["count"]
        # Full, whatever else writes meanwhile: a limit under what Redis already holds refuses every write, where
        # a margin over the memory in use could be outgrown or freed by the workers' own writes on a busy machine.
        # With noeviction (asserted: any other policy would evict the keys) nothing already stored is lost.
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert int(r.info("memory")["used_memory"]) > 2**20
        r.config_set("maxmemory", 2**20)
        try:
            response = bob.post("/v1/datasets", content=blob, headers=OCTETS)
        finally:
            r.config_set("maxmemory", 0)
        assert response.status_code == 507, response.text
        assert "maxmemory" in response.json()["detail"]
        assert bob.get("/v1/usage").json()["datasets"]["count"] == before


def test_sessions_count_in_storage_and_are_refused_past_it(fault_service: Service) -> None:
    """A session's state in Redis escaped the storage quota and /v1/usage; it now books the most it holds."""
    with fault_service.client("bob") as bob:
        before = bob.get("/v1/usage").json()
        room = before["quota_bytes"] - before["bytes"]
        # A session's state holds each weight several times (weights, grads, optimizer moments): this one's
        # weights alone are over a tenth of the room left, so two do not fit.
        inputs = room // 10 // 4 // 8 + 1
        wide = {
            "name": "Wide",
            "input_shape": [inputs],
            "layers": [{"name": "fc", "type": "Linear", "in_features": inputs, "out_features": 8}],
        }
        body = {"network": wide, "seed": 0, "optimizer": {"type": "Adam", "lr": 0.001}}
        first = bob.post("/v1/sessions", json=body)
        assert first.status_code == 201, first.text
        usage = bob.get("/v1/usage").json()
        assert usage["sessions"]["count"] == before["sessions"]["count"] + 1
        assert usage["sessions"]["bytes"] - before["sessions"]["bytes"] >= 4 * 2 * inputs * 8  # weights and grads
        assert usage["bytes"] == before["bytes"] + usage["sessions"]["bytes"] - before["sessions"]["bytes"]
        second = bob.post("/v1/sessions", json=body)
        assert second.status_code == 413, second.text
        detail = second.json()["detail"]
        assert detail.startswith("the session's state needs") and "GRADSERVE_TENANT_STORAGE_BYTES" in detail
        assert bob.delete(f"/v1/sessions/{first.json()['id']}").status_code == 204
        assert bob.get("/v1/usage").json()["sessions"] == before["sessions"]
        again = bob.post("/v1/sessions", json=body)
        assert again.status_code == 201, again.text
        assert bob.delete(f"/v1/sessions/{again.json()['id']}").status_code == 204
