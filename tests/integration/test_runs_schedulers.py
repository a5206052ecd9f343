"""Scheduled jobs: the lr column of a local PyTorch run, and bit-exact resume after a SIGKILL."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import optim
from torch.optim import lr_scheduler

from tests.conftest import Service
from tests.integration.jobs_helpers import lenet_job, mlp_job, submit, wait_final, wait_until

pytestmark = pytest.mark.integration
STEPS, BATCH, SAMPLES = 800, 8, 64  # 8 steps per epoch, 100 epochs: long enough to be killed mid-run
EPOCH = SAMPLES // BATCH


def _upload(client: httpx.Client) -> str:
    g = torch.Generator().manual_seed(11)
    blob = st_save(
        {
            "inputs": torch.randn((SAMPLES, 6), generator=g),
            "targets": torch.randint(3, (SAMPLES,), generator=g),
            "test_inputs": torch.randn((16, 6), generator=g),
            "test_targets": torch.randint(3, (16,), generator=g),
        }
    )
    response = client.post("/v1/datasets", content=blob)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _expected_lr(make: Callable[[optim.Optimizer], Any], lr: float, val_losses: list[float] | None = None) -> list:
    """The rate of every step of a local scheduler stepped at each epoch's end (on the job's own
    held-out losses, for ReduceLROnPlateau)."""
    opt = optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make(opt)
    out = []
    for step in range(1, STEPS + 1):
        out.append(opt.param_groups[0]["lr"])
        if step % EPOCH == 0:
            sched.step() if val_losses is None else sched.step(val_losses[step // EPOCH - 1])
    return out


def test_scheduled_jobs_follow_pytorch_and_resume_bit_exact(service: Service, client: httpx.Client) -> None:
    data_id = _upload(client)
    base = mlp_job(
        dataset={"source": "upload", "id": data_id},
        criterion={"type": "CrossEntropyLoss"},
        optimizer={"type": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
        steps=STEPS,
        batch_size=BATCH,
        capture={"checkpoint_every": 100, "graph": False},
        clip_grad_norm=1.0,
    )
    bodies = {
        "step": {**base, "lr_scheduler": {"type": "StepLR", "step_size": 20, "gamma": 0.5}},
        "plateau": {**base, "lr_scheduler": {"type": "ReduceLROnPlateau", "patience": 5, "factor": 0.5}},
    }
    killed, whole = {}, {}
    for kind, body in bodies.items():
        killed[kind] = submit(client, body)
        running = wait_until(
            client, killed[kind], lambda d: d["status"] == "running" and (d["checkpoint_step"] or 0) >= 100
        )
        victim = next(w for w in service.workers() if w["name"] == running["worker"])
        os.kill(victim["pid"], signal.SIGKILL)
        assert client.get(f"/v1/jobs/{killed[kind]}").json()["step"] < STEPS, "finished before the kill"
        whole[kind] = submit(client, body)

    for kind in bodies:
        a, b = wait_final(client, killed[kind], timeout=200), wait_final(client, whole[kind], timeout=200)
        assert a["status"] == b["status"] == "succeeded", (a, b)
        assert a["attempt"] == 2 and a["resumed_from"] >= 100, a
        ma, mb = (client.get(f"/v1/jobs/{j}/metrics").json() for j in (killed[kind], whole[kind]))
        assert ma["step"] == list(range(1, STEPS + 1)) and ma["loss"] == mb["loss"] and ma["lr"] == mb["lr"]
        wa, wb = (st_load(client.get(f"/v1/jobs/{j}/checkpoint").content) for j in (killed[kind], whole[kind]))
        assert all(torch.equal(wa[k], wb[k]) for k in wb), kind
        if kind == "step":
            assert ma["lr"] == _expected_lr(lambda o: lr_scheduler.StepLR(o, step_size=20, gamma=0.5), 0.05)
        else:
            assert ma["eval"]["step"] == list(range(EPOCH, STEPS + 1, EPOCH))
            plateau = lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=5, factor=0.5)
            assert ma["lr"] == _expected_lr(plateau, 0.05, ma["eval"]["val_loss"])
        assert len(set(ma["lr"])) > 2, f"{kind}: the schedule hardly changed the rate"


def test_scheduler_needs_what_it_steps_on(client: httpx.Client) -> None:
    plateau = client.post("/v1/jobs", json=lenet_job(lr_scheduler={"type": "ReduceLROnPlateau"}))
    assert plateau.status_code == 422 and "held-out" in plateau.json()["detail"][0]["msg"]
    cycle = client.post(
        "/v1/jobs",
        json=lenet_job(optimizer={"type": "Adagrad"}, lr_scheduler={"type": "OneCycleLR", "max_lr": 0.1}),
    )
    assert cycle.status_code == 422 and cycle.json()["detail"][0]["loc"][:2] == ["body", "lr_scheduler"]
    unknown = client.post("/v1/jobs", json=lenet_job(lr_scheduler={"type": "CyclicLR"}))
    assert unknown.status_code == 422 and "StepLR" in unknown.text
