"""Breakpoints over HTTP: a diverging job pauses at the step a local loop first goes non-finite, with no
update from it; it resumes with a lower learning rate to the end; pause, resume and cancel are the tenant's."""

from __future__ import annotations

import httpx
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load

from tests.conftest import Service
from tests.integration.jobs_helpers import LocalMLP, gradserve_cli, mlp_job, submit, wait_final, wait_until

DIVERGING_LR = 4.0


def _local_run(lr: float, steps: int, *, norm_above: float | None = None, then_lr: float = 0.0) -> dict:
    """mlp_job's loop run locally. Stops at the first step whose loss or a gradient is not finite (its step
    and the weights before it); with ``norm_above``, from the first step whose gradient norm is above it the
    rate is ``then_lr`` (that step included, as a resumed job retakes it)."""
    g = torch.Generator().manual_seed(1)  # the random dataset, as documented
    x, y = torch.randn((40, 6), generator=g), torch.randn((40, 3), generator=g)
    torch.manual_seed(2)
    net = LocalMLP()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    shuffler, step, out = torch.Generator().manual_seed(2), 0, {}
    while step < steps:
        for idx in torch.randperm(40, generator=shuffler).split(8):
            if step == steps:
                break
            step += 1
            before = {k: v.clone() for k, v in net.state_dict().items()}
            loss = F.mse_loss(net(x[idx]), y[idx])
            loss.backward()
            if not torch.isfinite(loss) or not all(torch.isfinite(p.grad).all() for p in net.parameters()):
                return {"non_finite": step, "before": before}
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in net.parameters()]))
            if norm_above is not None and "norm_step" not in out and norm > norm_above:
                out.update(norm_step=step, norm=norm.item())
                for group in opt.param_groups:
                    group["lr"] = then_lr
            opt.step()
            opt.zero_grad(set_to_none=True)
    return {**out, "weights": net.state_dict()}


def test_a_diverging_job_pauses_where_the_local_loop_breaks(client: httpx.Client) -> None:
    body = mlp_job(optimizer={"type": "SGD", "lr": DIVERGING_LR, "momentum": 0.9}, steps=60)
    body["capture"] = {"checkpoint_every": 1}
    job_id = submit(client, {**body, "breakpoints": {"nonfinite": True}})
    paused = wait_until(client, job_id, lambda d: d["status"] in {"paused", "failed", "succeeded"})
    assert paused["status"] == "paused", paused
    local = _local_run(DIVERGING_LR, 60)
    step = local["non_finite"]
    assert paused["breakpoint"]["rule"] == "nonfinite" and paused["breakpoint"]["step"] == step
    assert paused["step"] == step - 1
    assert client.get(f"/v1/jobs/{job_id}/metrics").json()["step"] == list(range(1, step))
    weights = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint").content)
    for name, tensor in local["before"].items():  # no update from the step that broke
        assert torch.equal(weights[name], tensor), name
    events = client.get(f"/v1/jobs/{job_id}/events", timeout=10).text  # ends at the pause
    assert '"status": "paused"' in events and '"rule": "nonfinite"' in events

    # Its loss is not finite because of the weights before it, which a lower rate from there cannot undo:
    # going back is a fork, from before the gradients first grew (a later step's momentum still carries
    # the divergence), with the lower rate; it trains to the end. The paused job is cancelled.
    calm = _local_run(DIVERGING_LR, 60, norm_above=10.0, then_lr=0.01)["norm_step"] - 1
    fork = client.post(f"/v1/jobs/{job_id}/fork", json={"step": calm, "changes": {"lr": 0.01}})
    assert fork.status_code == 202, fork.text
    assert wait_final(client, fork.json()["id"])["status"] == "succeeded"
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"


def test_a_job_paused_on_its_gradient_norm_resumes_with_a_lower_rate(client: httpx.Client) -> None:
    body = mlp_job(optimizer={"type": "SGD", "lr": DIVERGING_LR, "momentum": 0.9}, steps=60)
    job_id = submit(client, {**body, "breakpoints": {"grad_norm_above": 20.0}})
    paused = wait_until(client, job_id, lambda d: d["status"] in {"paused", "failed", "succeeded"})
    # Past the paused step the norm falls under 20 at the lower rate (it stays above 10 for a few steps:
    # a rule that still held would pause again, as a breakpoint should).
    local = _local_run(DIVERGING_LR, 60, norm_above=20.0, then_lr=0.01)
    assert paused["status"] == "paused" and paused["breakpoint"]["rule"] == "grad_norm_above"
    assert paused["breakpoint"]["step"] == local["norm_step"]
    assert paused["breakpoint"]["value"] == pytest.approx(local["norm"], rel=1e-6)

    resumed = client.post(f"/v1/jobs/{job_id}/resume", json={"changes": {"lr": 0.01}})
    assert resumed.status_code == 202, resumed.text
    assert resumed.json() == {"id": job_id, "status": "queued", "changes": {"lr": 0.01}}
    done = wait_final(client, job_id)
    assert done["status"] == "succeeded", done.get("error")
    assert client.get(f"/v1/jobs/{job_id}/metrics").json()["step"] == list(range(1, 61))
    weights = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint").content)
    for name, tensor in local["weights"].items():  # the same as switching the rate at that step by hand
        assert torch.equal(weights[name], tensor), name
    again = client.post(f"/v1/jobs/{job_id}/resume", json={})
    assert again.status_code == 409 and "succeeded, not paused" in again.json()["detail"]


def test_a_paused_job_is_cancelled_or_skips_its_batch_and_is_the_tenants(
    service: Service, client: httpx.Client, client_bob: httpx.Client
) -> None:
    first = submit(client, mlp_job(steps=30, breakpoints={"loss_above": 0.0}))  # every loss is above 0
    paused = wait_until(client, first, lambda d: d["status"] in {"paused", "failed", "succeeded"})
    assert paused["status"] == "paused" and paused["breakpoint"]["step"] == 1
    assert client_bob.post(f"/v1/jobs/{first}/resume", json={}).status_code == 404
    assert client_bob.post(f"/v1/jobs/{first}/cancel").status_code == 404
    assert client_bob.get(f"/v1/jobs/{first}").status_code == 404
    bad = client.post(f"/v1/jobs/{first}/resume", json={"changes": {"lr": -1.0}})
    assert bad.status_code == 422 and "lr" in str(bad.json()["detail"][0]["loc"])
    loss_at_1 = paused["breakpoint"]["value"]

    resumed = gradserve_cli(service, "jobs", "resume", first, "--skip-batch", "--watch")  # the CLI's way
    assert resumed.returncode == 5, resumed.stderr  # paused again: the exit code says so
    assert f"{first} queued" in resumed.stdout and "breakpoint loss_above at step 1" in resumed.stdout
    skipped = wait_until(client, first, lambda d: d["status"] == "paused" and d["breakpoint"]["step"] == 1)
    # Step 1 is taken on the second batch of the order now: another loss, and still nothing applied.
    assert skipped["breakpoint"]["value"] != loss_at_1 and skipped["step"] == 0

    cancelled = client.post(f"/v1/jobs/{first}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert wait_final(client, first)["status"] == "cancelled"

    # New rules as it resumes (null: none): it goes on unpaused, and the paused step it reruns is the one a
    # run without breakpoints took, so it ends where that run ends.
    second = submit(client, mlp_job(steps=12, breakpoints={"loss_above": 0.0}))
    assert wait_until(client, second, lambda d: d["status"] in {"paused", "failed", "succeeded"})["status"] == "paused"
    resumed = client.post(f"/v1/jobs/{second}/resume", json={"changes": {"breakpoints": None}})
    assert resumed.status_code == 202 and resumed.json()["changes"] == {"breakpoints": None}, resumed.text
    assert wait_final(client, second)["status"] == "succeeded"
    weights = st_load(client.get(f"/v1/jobs/{second}/checkpoint").content)
    for name, tensor in _local_run(0.05, 12)["weights"].items():
        assert torch.equal(weights[name], tensor), name
