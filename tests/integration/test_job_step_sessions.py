"""A live session at a step of a job: its forward, the job's loss and backward are the job's at that step,
bit for bit; from a checkpoint and a replay, from the job's start, at a breakpoint; the tenant's alone."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import safetensors.torch
import torch
import torch.nn.functional as F

import gradserve
from tests.conftest import API_KEYS, Service
from tests.integration.jobs_helpers import LocalMLP, mlp_job, submit, wait_final, wait_until


def _local_grads(step: int) -> dict[str, torch.Tensor]:
    """mlp_job's loop run locally: the gradients of ``step``."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn((40, 6), generator=g), torch.randn((40, 3), generator=g)
    torch.manual_seed(2)
    net = LocalMLP()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    shuffler, done = torch.Generator().manual_seed(2), 0
    while True:
        for idx in torch.randperm(40, generator=shuffler).split(8):
            done += 1
            F.mse_loss(net(x[idx]), y[idx]).backward()
            if done == step:
                return {k: p.grad.clone() for k, p in net.named_parameters()}
            opt.step()
            opt.zero_grad(set_to_none=True)


def _step_loss_and_grads(client: httpx.Client, sid: str) -> tuple[float, dict[str, torch.Tensor]]:
    batch = client.get(f"/v1/sessions/{sid}/batch").json()
    assert client.post(f"/v1/sessions/{sid}/forward", json={"input": batch["inputs"]}).status_code == 200
    loss = client.post(f"/v1/sessions/{sid}/loss", json={"criterion": {"type": "MSELoss"}, "target": batch["targets"]})
    assert loss.status_code == 200, loss.text
    assert client.post(f"/v1/sessions/{sid}/backward", json={}).status_code == 200
    grads = {}
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        grads[name] = torch.tensor(client.get(f"/v1/sessions/{sid}/parameters/{name}").json()["grad"])
    return loss.json()["loss"], grads


def test_a_session_at_a_step_gives_the_jobs_loss_and_gradients(service: Service, client: httpx.Client) -> None:
    job_id = submit(client, mlp_job(steps=12, capture={"checkpoint_every": 5, "graph": False}))
    assert wait_final(client, job_id)["status"] == "succeeded"
    losses = client.get(f"/v1/jobs/{job_id}/metrics").json()["loss"]
    for step in (8, 1):  # from the checkpoint at 5 and two replayed steps; from the job's seeded start
        opened = client.post(f"/v1/jobs/{job_id}/sessions", json={"step": step})
        assert opened.status_code == 201, opened.text
        assert opened.json()["job"] == {"id": job_id, "step": step}
        loss, grads = _step_loss_and_grads(client, opened.json()["id"])
        assert loss == losses[step - 1]
        for name, local in _local_grads(step).items():
            assert torch.equal(grads[name], local), (step, name)

    with gradserve.Client(service.url, api_key=API_KEYS["alice"]) as c:  # the client's way
        net = c.jobs.get(job_id).session(step=11)
        assert net.batch.step == 11 and net.batch.inputs.shape == (8, 6)
        loss = net.loss({"type": "MSELoss"}, net(net.batch.inputs), net.batch.targets)
        assert loss.item() == losses[10]
        net.delete()

    # gradserve jobs debug: a Python prompt with net and batch bound
    typed = "print('LOSS', repr(net.loss({'type': 'MSELoss'}, net(batch.inputs), batch.targets).item()))\n"
    env = {**os.environ, "GRADSERVE_URL": service.url, "GRADSERVE_API_KEY": API_KEYS["alice"]}
    argv = [sys.executable, "-m", "launcher", "jobs", "debug", job_id, "--step", "3"]
    shell = subprocess.run(argv, input=typed, env=env, capture_output=True, text=True, timeout=120)
    assert f"LOSS {losses[2]!r}" in shell.stdout, shell.stdout + shell.stderr
    assert "before step 3" in shell.stderr  # the banner

    assert client.post(f"/v1/jobs/{job_id}/sessions", json={"step": 14}).status_code == 409  # 12 steps taken
    assert client.post(f"/v1/jobs/{job_id}/sessions", json={}).status_code == 422  # not paused: say which step


def test_a_paused_job_opens_at_its_breakpoint_and_is_the_tenants(
    client: httpx.Client, client_bob: httpx.Client
) -> None:
    job_id = submit(client, mlp_job(steps=30, breakpoints={"loss_above": 1.2}))
    paused = wait_until(client, job_id, lambda d: d["status"] in {"paused", "failed", "succeeded"})
    assert paused["status"] == "paused", paused
    assert client_bob.post(f"/v1/jobs/{job_id}/sessions", json={}).status_code == 404
    opened = client.post(f"/v1/jobs/{job_id}/sessions", json={})
    assert opened.status_code == 201, opened.text
    sid = opened.json()["id"]
    assert opened.json()["job"]["step"] == paused["breakpoint"]["step"]
    assert client_bob.get(f"/v1/sessions/{sid}/batch").status_code == 404
    loss, _ = _step_loss_and_grads(client, sid)
    assert loss == paused["breakpoint"]["value"]  # the loss the breakpoint saw
    client.post(f"/v1/jobs/{job_id}/cancel")


def test_activations_of_a_step_equal_a_local_runs_hooks(client: httpx.Client, client_bob: httpx.Client) -> None:
    job_id = submit(client, mlp_job(steps=10, capture={"checkpoint_every": 4, "graph": False}))
    assert wait_final(client, job_id)["status"] == "succeeded"
    step = 7
    g = torch.Generator().manual_seed(1)  # mlp_job's loop run locally, with hooks at step 7
    x, y = torch.randn((40, 6), generator=g), torch.randn((40, 3), generator=g)
    torch.manual_seed(2)
    net = LocalMLP()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    seen: dict[str, torch.Tensor] = {}
    for name in ("fc1", "fc2"):
        getattr(net, name).register_forward_hook(lambda _m, _i, out, name=name: seen.update({name: out}))
    shuffler, done = torch.Generator().manual_seed(2), 0
    while done < step:
        for idx in torch.randperm(40, generator=shuffler).split(8):
            done += 1
            for out in (seen.get("fc1"), seen.get("fc2")):
                if out is not None and out.requires_grad:
                    out.retain_grad()
            loss = F.mse_loss(net(x[idx]), y[idx])
            for out in seen.values():
                out.retain_grad()
            loss.backward()
            if done == step:
                break
            opt.step()
            opt.zero_grad(set_to_none=True)

    params = {"step": step, "layers": "fc1,fc2", "format": "safetensors"}
    got = client.get(f"/v1/jobs/{job_id}/activations", params=params)
    assert got.status_code == 200, got.text
    remote = safetensors.torch.load(got.content)
    for name in ("fc1", "fc2"):
        assert torch.equal(remote[f"{name}.output"], seen[name].detach()), name
        assert torch.equal(remote[f"{name}.grad"], seen[name].grad), name
    stats = client.get(f"/v1/jobs/{job_id}/activations", params={**params, "format": "json", "bins": 8}).json()
    assert stats["loss"] == client.get(f"/v1/jobs/{job_id}/metrics").json()["loss"][step - 1]
    fc2 = stats["layers"]["fc2"]
    assert fc2["shape"] == [8, 3] and sum(fc2["output"]["histogram"]["counts"]) == 24
    assert fc2["grad"]["max"] == seen["fc2"].grad.max().item()
    again = client.get(f"/v1/jobs/{job_id}/activations", params=params)  # kept with the job
    assert again.content == got.content
    bad = client.get(f"/v1/jobs/{job_id}/activations", params={"step": step, "layers": "fc3"})
    assert bad.status_code == 422 and "fc3" in bad.text and "fc1" in bad.text
    assert client_bob.get(f"/v1/jobs/{job_id}/activations", params=params).status_code == 404


def test_a_session_continued_as_a_job_matches_a_fork_at_its_step(
    service: Service, client: httpx.Client, client_bob: httpx.Client
) -> None:
    job_id = submit(client, mlp_job(steps=8, capture={"checkpoint_every": 3, "graph": False}))
    assert wait_final(client, job_id)["status"] == "succeeded"
    sid = client.post(f"/v1/jobs/{job_id}/sessions", json={"step": 7}).json()["id"]  # after 6 steps
    _step_loss_and_grads(client, sid)  # looked at (forward, loss, backward), not updated
    changes = {"lr": 0.02, "steps": 11}
    went_on = client.post(f"/v1/sessions/{sid}/jobs", json={"changes": changes})
    assert went_on.status_code == 202, went_on.text
    forked = client.post(f"/v1/jobs/{job_id}/fork", json={"step": 6, "changes": changes})
    done = [wait_final(client, j) for j in (went_on.json()["id"], forked.json()["id"])]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"]
    assert done[0]["parent"] == {"id": job_id, "step": 6, "session": sid}
    weights = [safetensors.torch.load(client.get(f"/v1/jobs/{d['id']}/checkpoint").content) for d in done]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    losses = [client.get(f"/v1/jobs/{d['id']}/metrics").json()["loss"] for d in done]
    assert losses[0] == losses[1] and len(losses[0]) == 11
    with gradserve.Client(service.url, api_key=API_KEYS["alice"]) as c:  # the client's way
        job = c.jobs.get(job_id).session(step=7).continue_as_job(lr=0.02, steps=11)
        assert job.wait()["parent"]["step"] == 6
        assert all(torch.equal(job.checkpoint()[k], weights[1][k]) for k in weights[1])

    # What the session changes is what the job continues from: after a manual update, the continued job's
    # first step is the session's forward of that step's batch, at the weights the update left.
    assert client.post(f"/v1/sessions/{sid}/sgd_update", json={"lr": 0.5}).status_code == 200
    updated_loss, _ = _step_loss_and_grads(client, sid)
    again = client.post(f"/v1/sessions/{sid}/jobs", json={})
    assert again.status_code == 202, again.text
    assert wait_final(client, again.json()["id"])["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{again.json()['id']}/metrics").json()["loss"][6] == updated_loss != losses[0][6]

    assert client_bob.post(f"/v1/sessions/{sid}/jobs", json={}).status_code == 404  # alice's session
    plain = client.post("/v1/sessions", json={"network": mlp_job()["network"], "seed": 0})
    refused = client.post(f"/v1/sessions/{plain.json()['id']}/jobs", json={})
    assert refused.status_code == 409 and "not opened at a job's step" in refused.text
