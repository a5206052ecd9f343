"""A job's speed settings over HTTP: accumulation, mixed precision, clipping and channels-last, against the
same loop written out locally; the settings on the job's record; bad values named."""

from __future__ import annotations

import math

import httpx
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load

from tests.integration.jobs_helpers import lenet_job, submit, wait_final
from tests.lenet import Net

SETTINGS = {
    "precision": "bf16-mixed",
    "accumulate_grad_batches": 3,
    "gradient_clip_norm": 0.5,
    "channels_last": True,
}


def _local(steps: int, n: int, batch: int, k: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)  # lenet_job's random dataset, as documented
    x, y = torch.randn((n, 1, 32, 32), generator=g), torch.randint(10, (n,), generator=g)
    torch.manual_seed(3)
    net = Net().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    shuffler, done = torch.Generator().manual_seed(3), 0
    while done < steps:
        batches = torch.randperm(n, generator=shuffler).split(batch)
        for group in [batches[i : i + k] for i in range(0, len(batches), k)]:
            if done == steps:
                break
            for idx in group:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = F.cross_entropy(net(x[idx].contiguous(memory_format=torch.channels_last)), y[idx])
                (loss / len(group) if len(group) > 1 else loss).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
    return net.state_dict()


def test_settings_train_as_the_same_loop_written_locally(client: httpx.Client) -> None:
    # 40 samples in batches of 8 are 5 batches an epoch: steps of 3 and 2, so 2 epochs are 4 steps.
    body = lenet_job(dataset={"source": "random", "num_samples": 40, "num_classes": 10, "seed": 4}, batch_size=8)
    body.pop("steps")
    job_id = submit(client, {**body, "epochs": 2, **SETTINGS})
    done = wait_final(client, job_id)
    assert done["status"] == "succeeded", done.get("error")
    assert done["total_steps"] == 4 == math.ceil(math.ceil(40 / 8) / 3) * 2
    assert done["training"] == {
        "precision": "bf16-mixed",
        "accumulate_grad_batches": 3,
        "compile": False,
        "channels_last": True,
        "clip_grad_norm": 0.5,
    }
    remote = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint").content)
    before = torch.get_num_threads()
    torch.set_num_threads(done["threads"])  # bf16 convolutions reduce differently at another thread count
    try:
        local = _local(4, 40, 8, 3)
    finally:
        torch.set_num_threads(before)
    for name, tensor in local.items():
        assert torch.equal(remote[name], tensor), name
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()
    assert metrics["step"] == [1, 2, 3, 4] and metrics["epoch"] == [1, 1, 2, 2]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"precision": "fp8"}, "precision"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches"),
        ({"compile": "yes"}, "compile"),
        ({"gradient_clip_norm": -1.0}, "gradient_clip_norm"),
    ],
)
def test_bad_settings_name_the_field(client: httpx.Client, change: dict, field: str) -> None:
    response = client.post("/v1/jobs", json=lenet_job(**change))
    assert response.status_code == 422
    assert any(field in [str(part) for part in e["loc"]] for e in response.json()["detail"]), response.text
