"""Forks: from any kept checkpoint, exact when nothing changes, diverging only after the fork when something does."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load as st_load

from tests.integration.jobs_helpers import mlp_job, submit, wait_final

pytestmark = pytest.mark.integration
N = 30  # the fork step; 5 steps per epoch (40 samples, batch 8)
STEP_LR = {"type": "StepLR", "step_size": 2, "gamma": 0.5}


def _parent(client: httpx.Client) -> str:
    body = mlp_job(steps=60, capture={"checkpoint_every": 10}, lr_scheduler=STEP_LR, name="parent", tags=["p"])
    job_id = submit(client, body)
    assert wait_final(client, job_id)["status"] == "succeeded"
    return job_id


def _fork(client: httpx.Client, job_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/v1/jobs/{job_id}/fork", json={"step": N, "changes": changes})
    assert response.status_code == 202, response.text
    done = wait_final(client, response.json()["id"])
    assert done["status"] == "succeeded", done
    return done


def _metrics(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return client.get(f"/v1/jobs/{job_id}/metrics").json()


def _weights(client: httpx.Client, job_id: str) -> dict[str, torch.Tensor]:
    return st_load(client.get(f"/v1/jobs/{job_id}/checkpoint").content)


def test_fork_without_changes_repeats_the_parent_bit_for_bit(client: httpx.Client) -> None:
    parent = _parent(client)
    child = _fork(client, parent, {})
    assert child["parent"] == {"id": parent, "step": N} and child["name"] == "parent" and child["step"] == 60
    mp, mc = _metrics(client, parent), _metrics(client, child["id"])
    assert mc["step"] == list(range(1, 61))
    for column in ("step", "epoch", "loss", "lr"):  # steps 1..N from the parent, the rest recomputed equal
        assert mc[column] == mp[column], column
    assert len(set(mc["lr"][N:])) > 1  # the StepLR state carried over: the rate still halves on schedule
    wp, wc = _weights(client, parent), _weights(client, child["id"])
    assert all(torch.equal(wp[k], wc[k]) for k in wp)
    listed = client.get("/v1/jobs", params={"name": "parent", "tag": "p", "limit": 500}).json()["data"]
    assert {parent, child["id"]} <= {j["id"] for j in listed}


def test_fork_with_a_new_lr_diverges_only_after_the_fork(client: httpx.Client) -> None:
    parent = _parent(client)
    child = _fork(client, parent, {"lr": 0.2, "steps": 50, "name": "hot", "tags": ["fork"]})
    assert child["name"] == "hot" and child["tags"] == ["fork"] and child["request"]["optimizer"]["lr"] == 0.2
    mp, mc = _metrics(client, parent), _metrics(client, child["id"])
    assert mc["step"] == list(range(1, 51))
    assert mc["loss"][:N] == mp["loss"][:N] and mc["lr"][:N] == mp["lr"][:N]
    assert mc["loss"][N] == mp["loss"][N]  # step N+1's forward still sees the weights at N
    assert mc["lr"][N] == 0.2 != mp["lr"][N]  # ... and its update uses the new rate
    assert all(a != b for a, b in zip(mc["loss"][N + 1 :], mp["loss"][N + 1 : 50], strict=True))
    # The StepLR schedule goes on from the new rate: halved every 2 epochs (10 steps) as in the parent.
    assert mc["lr"][N:] == [0.2 * 0.5 ** ((s - N - 1) // 10) for s in range(N + 1, 51)]


def test_fork_changes_the_scheduler_and_checks_its_input(client: httpx.Client) -> None:
    parent = _parent(client)
    child = _fork(client, parent, {"lr_scheduler": None, "epochs": 10})
    mc = _metrics(client, child["id"])
    assert mc["step"] == list(range(1, 51)) and set(mc["lr"][N:]) == {0.05}  # no scheduler: the spec's lr
    missing = client.post(f"/v1/jobs/{parent}/fork", json={"step": 15})
    assert missing.status_code == 404 and "10, 20, 30" in missing.json()["detail"]
    short = client.post(f"/v1/jobs/{parent}/fork", json={"step": N, "changes": {"steps": N}})
    assert short.status_code == 422 and short.json()["detail"][0]["loc"] == ["body", "changes", "steps"]
    unknown = client.post(f"/v1/jobs/{parent}/fork", json={"step": N, "changes": {"network": {}}})
    assert unknown.status_code == 422


def test_fork_of_an_inline_dataset_job_keeps_its_data(client: httpx.Client) -> None:
    inline = {"source": "inline", "inputs": {"randn": [24, 6], "seed": 5}, "targets": {"randn": [24, 3], "seed": 6}}
    parent = submit(client, mlp_job(dataset=inline, steps=12, capture={"checkpoint_every": 4}))
    assert wait_final(client, parent)["status"] == "succeeded"
    response = client.post(f"/v1/jobs/{parent}/fork", json={"step": 4})
    assert response.status_code == 202, response.text
    child = response.json()["id"]
    assert wait_final(client, child)["status"] == "succeeded"
    assert _metrics(client, child)["loss"] == _metrics(client, parent)["loss"]
    wp, wc = _weights(client, parent), _weights(client, child)
    assert all(torch.equal(wp[k], wc[k]) for k in wp)
