"""Issue 9's bounds against the shared live service: idempotent POSTs, bodies and uploads over their
limits, bounded optimizer settings, what /readyz tells strangers, usage and dataset deletion, OpenAPI."""

from __future__ import annotations

import io
import uuid
import zipfile

import httpx
import numpy as np
import pytest

from tests.conftest import Service, detail_of
from tests.integration.jobs_helpers import MLP, mlp_job, wait_final

pytestmark = pytest.mark.integration
OCTETS = {"content-type": "application/octet-stream"}


def _key() -> dict[str, str]:
    return {"Idempotency-Key": uuid.uuid4().hex}


def test_idempotency_key_replays_the_first_answer(client: httpx.Client) -> None:
    key = _key()
    first = client.post("/v1/networks", json=MLP, headers=key)
    again = client.post("/v1/networks", json=MLP, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = client.post("/v1/networks", json={**MLP, "name": "Other"}, headers=key)
    assert other.status_code == 422 and detail_of(other)["loc"] == ["header", "idempotency-key"]
    # Keys are per tenant: bob's same key is a new request.
    with httpx.Client(base_url=str(client.base_url), headers={"Authorization": "Bearer key-bob-0123456789"}) as bob:
        assert bob.post("/v1/networks", json=MLP, headers=key).json()["id"] != first.json()["id"]


def test_idempotent_job_submission_runs_once(client: httpx.Client) -> None:
    key, body = _key(), mlp_job(steps=5)
    ids = {client.post("/v1/jobs", json=body, headers=key).json()["id"] for _ in range(3)}
    assert len(ids) == 1
    assert wait_final(client, ids.pop())["status"] == "succeeded"
    blob = io.BytesIO()
    np.savez(blob, inputs=np.zeros((4, 6)), targets=np.zeros(4, dtype=np.int64))
    key = _key()
    a = client.post("/v1/datasets", content=blob.getvalue(), headers={**OCTETS, **key})
    b = client.post("/v1/datasets", content=blob.getvalue(), headers={**OCTETS, **key})
    assert a.status_code == 201 and a.json() == b.json()


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks():  # 200 MB, sent chunked (no Content-Length), as a stream of 1 MB pieces
        for _ in range(200):
            yield b"0" * 2**20

    try:  # (a dataset upload has its own, larger cap: tests/integration/test_artifacts.py)
        response = client.post("/v1/jobs", content=chunks(), headers=OCTETS)
    except httpx.TransportError:  # the server may close before the client has sent everything
        pytest.fail("the server hung up without answering 413")
    assert response.status_code == 413, response.text
    assert "GRADSERVE_MAX_BODY_BYTES" in response.json()["detail"]


def test_npz_claiming_a_huge_array_is_413(client: httpx.Client) -> None:
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("inputs.npy", member.getvalue() + b"\0" * 16)
        archive.writestr("targets.npy", member.getvalue())
    response = client.post("/v1/datasets", content=buf.getvalue(), headers=OCTETS)
    assert response.status_code == 413, response.text
    assert "16,000,000,000,000 bytes once decoded" in response.json()["detail"]


def test_absurd_learning_rate_is_422(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json=mlp_job(optimizer={"type": "SGD", "lr": 1e308}))
    assert response.status_code == 422
    assert detail_of(response)["loc"][-2:] == ["SGD", "lr"] or "lr" in detail_of(response)["loc"]


def test_readyz_details_only_for_authenticated_callers(service: Service) -> None:
    anonymous = httpx.get(f"{service.url}/readyz").json()
    assert anonymous["status"] == "ready" and anonymous["workers_alive"] >= 1
    assert "workers" not in anonymous and "pid" not in str(anonymous)
    assert all("pid" in w for w in service.workers())


def test_usage_and_dataset_deletion(client: httpx.Client) -> None:
    before = client.get("/v1/usage").json()
    blob = io.BytesIO()
    np.savez(blob, inputs=np.zeros((100, 6)), targets=np.zeros(100, dtype=np.int64))
    made = client.post("/v1/datasets", content=blob.getvalue(), headers=OCTETS).json()
    during = client.get("/v1/usage").json()
    assert during["datasets"]["count"] == before["datasets"]["count"] + 1
    assert during["datasets"]["bytes"] >= before["datasets"]["bytes"] + made["bytes"]
    assert during["quota_bytes"] > 0 and during["bytes"] >= during["datasets"]["bytes"]
    assert client.delete(f"/v1/datasets/{made['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{made['id']}").status_code == 404
    assert client.delete(f"/v1/datasets/{made['id']}").status_code == 404
    assert client.get("/v1/usage").json()["datasets"]["count"] == before["datasets"]["count"]


def test_openapi_lists_error_answers_and_text_metrics(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    cancel = spec["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    assert {"404", "409", "503"} <= set(cancel)
    assert "429" in spec["paths"]["/v1/jobs"]["post"]["responses"]
    metrics = spec["paths"]["/v1/jobs/{job_id}/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics["application/json"]["schema"] == {"$ref": "#/components/schemas/MetricsPublic"}
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
