"""Training jobs against the live service: real API, real Redis, real Celery workers, over HTTP."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from torch import nn

from models.settings import Settings
from tests.conftest import detail_of
from tests.integration.jobs_helpers import MLP, lenet_job, mlp_job, sse, submit, wait_final, wait_until
from tests.lenet import LENET_SPEC


def test_lenet_learns_digits(client: httpx.Client) -> None:
    """The tutorial's LeNet on real handwritten digits: >= 95% held-out accuracy in under a minute."""
    started = time.monotonic()
    job_id = submit(
        client,
        {
            "network": LENET_SPEC,
            "dataset": {"source": "digits", "image_size": 32},
            "criterion": {"type": "CrossEntropyLoss"},
            "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9},
            "batch_size": 32,
            "epochs": 10,
            "seed": 0,
        },
    )
    job = wait_final(client, job_id, timeout=60)
    assert job["status"] == "succeeded", job
    assert time.monotonic() - started < 60
    assert job["step"] == job["total_steps"] == 10 * 45 and job["epoch"] == 10
    assert job["val_accuracy"] >= 0.95, job
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()
    assert metrics["step"] == list(range(1, 451))
    losses = metrics["loss"]
    assert sum(losses[-45:]) / 45 < 0.25 * sum(losses[:45]) / 45  # the loss falls
    assert len(metrics["accuracy"]) == 450 and metrics["lr"][0] == 0.01
    assert metrics["eval"]["step"] == [45 * e for e in range(1, 11)]
    polled = client.get(f"/v1/jobs/{job_id}/metrics", params={"since": 440}).json()
    assert polled["step"] == list(range(441, 451))
    state = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint").content)
    assert state["conv1.weight"].shape == (6, 1, 5, 5)
    graph = client.get(f"/v1/jobs/{job_id}/graph").json()
    assert graph["nodes"][0]["name"] == "NllLossBackward0"
    assert {"name": "conv1.weight", "shape": [6, 1, 5, 5]} in [n.get("param") for n in graph["nodes"]]


def test_gradients_equal_a_local_pytorch_run(client: httpx.Client) -> None:
    body = mlp_job(steps=12, capture={"gradients_every": 4, "graph": False})
    job_id = submit(client, body)
    assert wait_final(client, job_id)["status"] == "succeeded"

    class Local(nn.Module):  # the network hand-written, as a user would
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(F.relu(self.fc1(x)))

    g = torch.Generator().manual_seed(1)  # the random dataset, as documented
    x, y = torch.randn((40, 6), generator=g), torch.randn((40, 3), generator=g)
    torch.manual_seed(2)
    net = Local()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    shuffler, step, grads = torch.Generator().manual_seed(2), 0, {}
    while step < 12:
        for idx in torch.randperm(40, generator=shuffler).split(8):
            F.mse_loss(net(x[idx]), y[idx]).backward()
            step += 1
            if step % 4 == 0:
                grads[step] = {k: p.grad.clone() for k, p in net.named_parameters()}
            opt.step()
            opt.zero_grad(set_to_none=True)
    listing = client.get(f"/v1/jobs/{job_id}/gradients").json()
    assert listing["steps"] == [4, 8, 12]
    for k in (4, 8, 12):
        stats = client.get(f"/v1/jobs/{job_id}/gradients", params={"step": k}).json()["parameters"]
        assert stats["fc1.weight"]["shape"] == [16, 6]
        assert stats["fc2.bias"]["norm"] == pytest.approx(grads[k]["fc2.bias"].norm().item(), rel=1e-5)
        params = {"step": k, "format": "safetensors"}
        remote = st_load(client.get(f"/v1/jobs/{job_id}/gradients", params=params).content)
        for name, local in grads[k].items():
            torch.testing.assert_close(remote[name], local, rtol=1e-6, atol=1e-7)
    missing = client.get(f"/v1/jobs/{job_id}/gradients", params={"step": 5})
    assert missing.status_code == 404 and "4, 8, 12" in missing.json()["detail"]


def test_cancel_mid_run(client: httpx.Client) -> None:
    job_id = submit(client, lenet_job(steps=100_000))
    wait_until(client, job_id, lambda d: d["status"] == "running" and d["step"] > 0)
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "running"  # until its worker stops
    assert cancelled.json()["cancel_requested"] is True
    now = client.get(f"/v1/jobs/{job_id}").json()
    assert now["status"] == "cancelled" or (now["status"] == "running" and now["cancel_requested"] is True)
    job = wait_final(client, job_id, timeout=30)
    assert job["status"] == "cancelled" and 0 < job["step"] < 100_000
    assert job["checkpoint_step"] == job["step"]  # the weights reached are kept
    assert client.get(f"/v1/jobs/{job_id}/checkpoint").status_code == 200
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409


def test_events_stream_resumes_with_last_event_id(client: httpx.Client) -> None:
    job_id = submit(client, lenet_job(steps=150, batch_size=16))
    first: list[dict[str, str]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse(response):
            first.append(event)
            if sum(e["event"] == "metric" for e in first) >= 5:
                break  # drop the connection mid-run
    rest: list[dict[str, str]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": first[-1]["id"]}) as response:
        rest = list(sse(response))  # the server ends the stream after the final state
    events = first + rest
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    steps = [json.loads(e["data"])["step"] for e in events if e["event"] == "metric"]
    assert steps == list(range(1, 151))
    states = [json.loads(e["data"])["status"] for e in events if e["event"] == "state"]
    assert states[0] == "queued" and "running" in states and states[-1] == "succeeded"
    assert events[-1]["event"] == "state"


def test_nan_fails_and_the_worker_goes_on(client: httpx.Client) -> None:
    failed_id = submit(client, mlp_job(optimizer={"type": "SGD", "lr": 1e4}, steps=50))  # the largest lr allowed
    failed = wait_final(client, failed_id)
    assert failed["status"] == "failed" and "loss is" in failed["error"] and "stop_on_nan" in failed["error"]
    states = [json.loads(e["data"]) for e in sse(client.get(f"/v1/jobs/{failed_id}/events")) if e["event"] == "state"]
    assert states[-1]["status"] == "failed" and states[-1]["error"] == failed["error"]
    for _ in range(20):  # small jobs until one lands on the worker that ran the failed one
        job = wait_final(client, submit(client, mlp_job()))
        assert job["status"] == "succeeded", job
        if job["worker"] == failed["worker"]:
            break
    else:
        pytest.fail(f"no job ran on {failed['worker']} after its failure")


BAD = [
    ("dataset shape", {"dataset": {"source": "random", "input_shape": [1, 28, 28]}}, ["dataset", "input_shape"]),
    ("unknown loss", {"criterion": {"type": "FocalLoss"}}, ["criterion"]),
    ("batch size 0", {"batch_size": 0}, ["batch_size"]),
    ("negative lr", {"optimizer": {"type": "SGD", "lr": -0.1}}, ["optimizer", "SGD", "lr"]),
    ("too many steps", {"steps": 10_000_000}, ["steps"]),
    ("too many epochs", {"steps": None, "epochs": 1_000_000}, ["epochs"]),
    ("digits at 8x8 for LeNet", {"dataset": {"source": "digits"}}, ["dataset", "image_size"]),
    ("no GPU worker", {"device": "cuda"}, ["device"]),
    ("unknown field", {"learning_rate": 0.1}, ["learning_rate"]),
    (
        "regression targets for a class loss",
        {"dataset": {"source": "random", "target_shape": [10]}},
        ["dataset", "target_shape"],
    ),
    (
        "inline inputs of the wrong shape",
        {"dataset": {"source": "inline", "inputs": {"zeros": [4, 1, 8, 8]}, "targets": [0, 1, 2, 3]}},
        ["dataset", "inputs"],
    ),
    ("too many gradient snapshots", {"capture": {"gradients_every": 1}}, ["capture", "gradients_every"]),
]


@pytest.mark.parametrize(("case", "change", "loc"), BAD, ids=[b[0] for b in BAD])
def test_bad_submissions_name_the_field(client: httpx.Client, case: str, change: dict, loc: list) -> None:
    body = {k: v for k, v in {**lenet_job(steps=1000), **change}.items() if v is not None}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert detail_of(response)["loc"][1 : 1 + len(loc)] == loc, response.text


def test_list_filter_paginate_and_tenants(client: httpx.Client, client_bob: httpx.Client) -> None:
    ids = [submit(client, mlp_job(steps=5)) for _ in range(3)]
    for job_id in ids:
        wait_final(client, job_id)
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["next_offset"] == 2
    following = client.get("/v1/jobs", params={"limit": 1, "offset": page["next_offset"]}).json()
    assert following["data"][0]["id"] == ids[0]
    done = client.get("/v1/jobs", params={"status": "succeeded", "limit": 500}).json()["data"]
    assert set(ids) <= {j["id"] for j in done} and all(j["status"] == "succeeded" for j in done)
    assert client.get("/v1/jobs", params={"status": "bogus"}).status_code == 422
    assert client_bob.get(f"/v1/jobs/{ids[0]}").status_code == 404
    assert client_bob.get(f"/v1/jobs/{ids[0]}/metrics").status_code == 404
    assert client_bob.post(f"/v1/jobs/{ids[0]}/cancel").status_code == 404
    assert ids[0] not in {j["id"] for j in client_bob.get("/v1/jobs").json()["data"]}


def test_network_by_id_and_inline_data(client: httpx.Client) -> None:
    net_id = client.post("/v1/networks", json=MLP).json()["id"]
    body = mlp_job(
        network=None,
        network_id=net_id,
        criterion={"type": "CrossEntropyLoss"},
        dataset={"source": "inline", "inputs": {"randn": [10, 6], "seed": 3}, "targets": [0, 1, 2] * 3 + [0]},
    )
    job = wait_final(client, submit(client, {k: v for k, v in body.items() if v is not None}))
    assert job["status"] == "succeeded" and job["network_id"] == net_id and job["total_steps"] == 20
    assert job["request"]["dataset"]["source"] == "inline"
    missing = client.post("/v1/jobs", json={**body, "network": None, "network_id": "net_nope"})
    assert missing.status_code == 404 and "net_nope" in missing.json()["detail"]


def test_concurrent_jobs_over_the_quota_get_429(client_bob: httpx.Client) -> None:
    active = [
        j
        for j in client_bob.get("/v1/jobs", params={"limit": 100}).json()["data"]
        if j["status"] in {"queued", "running"}
    ]
    assert not active, active
    long_job = mlp_job(steps=500_000)
    # The service runs with this process's environment, so the same settings give its quota.
    ids = [submit(client_bob, long_job) for _ in range(Settings().max_concurrent_jobs)]
    try:
        refused = client_bob.post("/v1/jobs", json=long_job)
        assert refused.status_code == 429, refused.text
        assert "GRADSERVE_MAX_CONCURRENT_JOBS" in refused.json()["detail"]
        assert refused.headers["retry-after"]
    finally:
        for job_id in ids:
            client_bob.post(f"/v1/jobs/{job_id}/cancel")
        for job_id in ids:
            assert wait_final(client_bob, job_id)["status"] == "cancelled"
    assert client_bob.post("/v1/jobs", json=mlp_job()).status_code == 202
