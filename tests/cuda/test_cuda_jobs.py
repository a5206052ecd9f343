"""On a CUDA worker: jobs and sessions on the GPU give what the same PyTorch gives on the same GPU.

Collected everywhere; they run only where this process sees a CUDA device (the service's workers then see
it too), since on the GPU the numbers depend on the card's kernels and a CPU run has nothing to say.
"""

from __future__ import annotations

import contextlib

import httpx
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load

from tests.integration.jobs_helpers import LocalMLP, mlp_job, submit, wait_final
from tests.lenet import LENET_SPEC, Net

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _local(precision: str, k: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn((40, 6), generator=g).to(CUDA), torch.randn((40, 3), generator=g).to(CUDA)
    torch.manual_seed(2)
    net = LocalMLP().to(CUDA)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if precision == "16-mixed" else None
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    shuffler, done = torch.Generator().manual_seed(2), 0
    while done < 20:
        batches = torch.randperm(40, generator=shuffler).to(CUDA).split(8)
        for group in [batches[i : i + k] for i in range(0, len(batches), k)]:
            if done == 20:
                break
            for idx in group:
                with torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext():
                    loss = F.mse_loss(net(x[idx]), y[idx])
                scaled = loss / len(group) if len(group) > 1 else loss
                (scaler.scale(scaled) if scaler else scaled).backward()
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
    return {k: v.cpu() for k, v in net.state_dict().items()}


@pytest.mark.parametrize(("precision", "k"), [("32", 1), ("bf16-mixed", 1), ("16-mixed", 2)])
def test_a_cuda_job_equals_the_same_loop_on_this_gpu(client: httpx.Client, precision: str, k: int) -> None:
    job_id = submit(client, mlp_job(device="cuda", precision=precision, accumulate_grad_batches=k))
    done = wait_final(client, job_id)
    assert done["status"] == "succeeded", done.get("error")
    assert done["device_used"].startswith("cuda")
    remote = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint").content)
    for name, tensor in _local(precision, k).items():
        assert torch.equal(remote[name], tensor), (precision, name)


def test_a_cuda_session_runs_the_tutorial_on_the_gpu(client: httpx.Client) -> None:
    created = client.post("/v1/sessions", json={"network": LENET_SPEC, "device": "cuda", "seed": 0})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    try:
        x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(7))
        out = client.post(f"/v1/sessions/{sid}/forward", json={"input": x.tolist()})
        assert out.status_code == 200, out.text
        torch.manual_seed(0)
        net = Net().to(CUDA)
        local = net(x.to(CUDA)).detach().cpu()
        assert out.json()["shape"] == [1, 10]
        torch.testing.assert_close(torch.tensor(out.json()["output"]), local, rtol=1e-4, atol=1e-5)
    finally:
        client.delete(f"/v1/sessions/{sid}")
