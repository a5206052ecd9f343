"""A job whose worker is SIGKILLed mid-run resumes elsewhere from its checkpoint, bit for bit."""

from __future__ import annotations

import os
import signal

import httpx
import torch
from safetensors.torch import load as st_load

from tests.conftest import Service
from tests.integration.jobs_helpers import lenet_job, submit, wait_final, wait_until


def test_sigkill_mid_run_resumes_bit_exact(service: Service, client: httpx.Client) -> None:
    body = lenet_job(steps=400, batch_size=16, capture={"checkpoint_every": 20, "graph": False})
    killed_id = submit(client, body)
    running = wait_until(client, killed_id, lambda d: d["status"] == "running" and (d["checkpoint_step"] or 0) >= 20)
    victim = next(w for w in service.workers() if w["name"] == running["worker"])
    os.kill(victim["pid"], signal.SIGKILL)
    at_kill = client.get(f"/v1/jobs/{killed_id}").json()
    assert at_kill["step"] < 400, "the job finished before the kill; make it longer"

    whole_id = submit(client, body)  # the same job, left alone
    killed = wait_final(client, killed_id, timeout=240)
    whole = wait_final(client, whole_id, timeout=240)
    assert killed["status"] == whole["status"] == "succeeded", (killed, whole)
    assert killed["attempt"] == 2 and killed["worker"] != running["worker"]
    assert 20 <= killed["resumed_from"] <= at_kill["step"]

    steps = client.get(f"/v1/jobs/{killed_id}/metrics").json()["step"]
    assert steps == list(range(1, 401))  # every step exactly once, none lost, none repeated
    resumed = st_load(client.get(f"/v1/jobs/{killed_id}/checkpoint").content)
    uninterrupted = st_load(client.get(f"/v1/jobs/{whole_id}/checkpoint").content)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
    losses = [client.get(f"/v1/jobs/{j}/metrics").json()["loss"] for j in (killed_id, whole_id)]
    assert losses[0] == losses[1]
