"""Runs a team can keep: names, tags, totals, lists and deletes, agreeing statuses, null for non-finite."""

from __future__ import annotations

import math

import httpx
import pytest
import redis

from tests.conftest import Service
from tests.integration.jobs_helpers import MLP, mlp_job, submit, wait_final, wait_until

pytestmark = pytest.mark.integration


def _keys_of(service: Service, tenant: str, object_id: str) -> list[bytes]:
    with redis.Redis.from_url(service.redis_url) as r:
        return [k for k in r.scan_iter(match=f"gs:{tenant}:*{object_id}*", count=1000)]


def test_names_tags_filters_and_totals(client: httpx.Client) -> None:
    run = "lifecycle-run"
    a = submit(client, mlp_job(steps=3, name=run, tags=["baseline", "lr=0.05"]))
    b = submit(client, mlp_job(steps=3, name=run, tags=["baseline"]))
    c = submit(client, mlp_job(steps=3, name="other", tags=["lr=0.05"]))
    for job_id in (a, b, c):
        wait_final(client, job_id)
    doc = client.get(f"/v1/jobs/{a}").json()
    assert doc["name"] == run and doc["tags"] == ["baseline", "lr=0.05"] and doc["parent"] is None

    named = client.get("/v1/jobs", params={"name": run}).json()
    assert [j["id"] for j in named["data"]] == [b, a] and named["total"] == 2 and named["next_offset"] is None
    both = client.get("/v1/jobs", params=[("tag", "baseline"), ("tag", "lr=0.05")]).json()
    assert [j["id"] for j in both["data"]] == [a] and both["total"] == 1
    paged = client.get("/v1/jobs", params={"tag": "lr=0.05", "limit": 1}).json()
    assert paged["count"] == 1 and paged["total"] == 2 and paged["next_offset"] == 1
    everything = client.get("/v1/jobs", params={"limit": 1}).json()
    assert everything["total"] >= 3 and everything["count"] == 1
    bad = client.post("/v1/jobs", json=mlp_job(tags=["no spaces allowed"]))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["body", "tags"]


def test_unknown_query_parameters_are_422(client: httpx.Client) -> None:
    job_id = submit(client, mlp_job(steps=2))
    wait_final(client, job_id)
    for path, params in [
        (f"/v1/jobs/{job_id}/checkpoint", {"stpe": 2}),
        ("/v1/jobs", {"stauts": "running"}),
        (f"/v1/jobs/{job_id}", {"verbose": 1}),
        ("/v1/networks", {"page": 2}),
        ("/healthz", {"x": 1}),
    ]:
        response = client.get(path, params=params)
        assert response.status_code == 422, (path, response.text)
        detail = response.json()["detail"][0]
        assert detail["loc"] == ["query", next(iter(params))] and "unknown query parameter" in detail["msg"]
    assert client.get(f"/v1/jobs/{job_id}/checkpoint", params={"step": 2}).status_code == 200


def test_delete_job_removes_every_key_and_refuses_running_ones(service: Service, client: httpx.Client) -> None:
    inline = {"source": "inline", "inputs": {"randn": [16, 6], "seed": 1}, "targets": {"randn": [16, 3], "seed": 2}}
    done = submit(client, mlp_job(steps=4, dataset=inline, capture={"checkpoint_every": 2, "gradients_every": 2}))
    wait_final(client, done)
    assert client.get(f"/v1/jobs/{done}/export", params={"format": "torchscript"}).status_code == 200
    assert len(_keys_of(service, "alice", done)) >= 8  # hash, events, data, checkpoints, grads, graph, exports...
    assert client.delete(f"/v1/jobs/{done}").status_code == 204
    assert _keys_of(service, "alice", done) == []
    assert client.get(f"/v1/jobs/{done}").status_code == 404
    assert done not in {j["id"] for j in client.get("/v1/jobs", params={"limit": 500}).json()["data"]}
    assert client.delete(f"/v1/jobs/{done}").status_code == 404

    slow = {"type": "SGD", "lr": 1e-4}
    running = submit(client, mlp_job(steps=1_000_000, batch_size=1, optimizer=slow))
    wait_until(client, running, lambda d: d["status"] == "running" and d["step"] > 0)
    refused = client.delete(f"/v1/jobs/{running}")
    assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]
    answer = client.post(f"/v1/jobs/{running}/cancel").json()
    assert answer == {"id": running, "status": "running", "cancel_requested": True}
    seen = client.get(f"/v1/jobs/{running}").json()
    assert seen["status"] == "cancelled" or seen["cancel_requested"] is True
    if seen["status"] == "running":
        listed = client.get("/v1/jobs", params={"status": "running", "limit": 500}).json()["data"]
        assert running in {j["id"] for j in listed} or wait_final(client, running)["status"] == "cancelled"
    final = wait_final(client, running)
    assert final["status"] == "cancelled", final
    assert client.delete(f"/v1/jobs/{running}").status_code == 204
    assert _keys_of(service, "alice", running) == []


def test_failed_step_and_non_finite_numbers(client: httpx.Client) -> None:
    inputs = [[0.1 * (i + j) for j in range(6)] for i in range(16)]
    inputs[9][2] = 1e38  # squared by MSE: inf in the batch of samples 8..11, the third step
    body = mlp_job(
        dataset={"source": "inline", "inputs": inputs, "targets": {"randn": [16, 3], "seed": 3}},
        optimizer={"type": "SGD", "lr": 0.001},
        batch_size=4,
        steps=40,
        shuffle=False,
    )
    job = wait_final(client, submit(client, body))
    assert job["status"] == "failed" and job["step"] == 3, job
    assert job["loss"] is None and job["non_finite"] == {"loss": "inf"}
    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()
    assert metrics["step"] == [1, 2, 3] and metrics["loss"][2] is None and math.isfinite(metrics["loss"][1])
    assert metrics["non_finite"] == [{"step": 3, "column": "loss", "value": "inf"}]


def test_session_list_holds_only_the_tenants_sessions(client: httpx.Client, client_bob: httpx.Client) -> None:
    mine = client.post("/v1/sessions", json={"network": MLP, "seed": 0, "device": "cpu"}).json()["id"]
    theirs = client_bob.post("/v1/sessions", json={"network": MLP, "seed": 0, "device": "cpu"}).json()["id"]
    for tenant, own, other in ((client, mine, theirs), (client_bob, theirs, mine)):
        listed = tenant.get("/v1/sessions", params={"limit": 500}).json()
        ids = {s["id"] for s in listed["data"]}
        assert own in ids and other not in ids and listed["total"] == len(ids)


def test_list_and_delete_networks_sessions_datasets(service: Service, client: httpx.Client) -> None:
    nets = [client.post("/v1/networks", json=MLP).json()["id"] for _ in range(2)]
    listed = client.get("/v1/networks", params={"limit": 1}).json()
    assert listed["data"][0]["id"] == nets[1] and listed["total"] >= 2 and listed["next_offset"] == 1
    assert client.delete(f"/v1/networks/{nets[0]}").status_code == 204
    assert client.get(f"/v1/networks/{nets[0]}").status_code == 404
    assert nets[0] not in {n["id"] for n in client.get("/v1/networks", params={"limit": 500}).json()["data"]}
    assert _keys_of(service, "alice", nets[0]) == []

    sid = client.post("/v1/sessions", json={"network_id": nets[1], "seed": 0, "device": "cpu"}).json()["id"]
    sessions = client.get("/v1/sessions", params={"limit": 500}).json()
    assert sid in {s["id"] for s in sessions["data"]} and sessions["total"] == len(sessions["data"])
    assert client.delete(f"/v1/sessions/{sid}").status_code == 204
    assert sid not in {s["id"] for s in client.get("/v1/sessions", params={"limit": 500}).json()["data"]}
    assert _keys_of(service, "alice", sid) == []

    import torch
    from safetensors.torch import save

    blob = save({"inputs": torch.zeros(4, 6), "targets": torch.zeros(4, 3)})
    data_id = client.post("/v1/datasets", content=blob).json()["id"]
    datasets = client.get("/v1/datasets").json()
    assert datasets["data"][0]["id"] == data_id and datasets["total"] >= 1
