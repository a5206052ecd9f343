"""Jobs of exported networks: a nested ResNet-style model trains on an uploaded dataset, its held-out metrics
are computed by the eval program, ``to_local()`` is the user's own class and scores exactly what the job
reported, a fork continues it, and the job outlives the network it was submitted from."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator

import pytest
import safetensors.torch
import torch
from torch import nn

import gradserve
from tests.conftest import API_KEYS, Service
from tests.zoo import CASES

pytestmark = pytest.mark.integration


@pytest.fixture
def gs(service: Service) -> Iterator[gradserve.Client]:
    with gradserve.Client(service.url, api_key=API_KEYS["alice"]) as c:
        yield c


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 3, 16, 16, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float() / 5  # learnable: brightness
    return x, y


def test_a_nested_model_trains_as_a_job_and_to_local_scores_what_it_reported(gs: gradserve.Client) -> None:
    torch.manual_seed(0)
    model = CASES["resnet"].make()
    x, y = _images(96, 0)
    x_val, y_val = _images(48, 1)
    data = gs.datasets.upload(x, y, test_inputs=x_val, test_targets=y_val)
    job = gs.jobs.submit(
        model,
        data,
        nn.CrossEntropyLoss(),
        torch.optim.SGD,
        lr=0.05,
        batch_size=16,
        epochs=2,
        capture={"checkpoint_every": 6},
    )
    final = job.wait(timeout=240)
    assert final["status"] == "succeeded", final.get("error")
    doc = gs.request("GET", f"/v1/networks/{job.last['request']['network_id']}").json()
    assert doc["format"] == "export" and doc["repr"] == repr(model)

    local = job.to_local()
    assert type(local) is type(model)
    before = torch.get_num_threads()
    torch.set_num_threads(final["threads"] or before)
    try:
        with torch.no_grad():
            accuracy = int((local.eval()(x_val).argmax(1) == y_val).sum()) / y_val.numel()
    finally:
        torch.set_num_threads(before)
    assert accuracy == final["val_accuracy"]
    # BatchNorm's running statistics moved in training and are what eval mode used.
    assert not torch.equal(local.bn1.running_mean, torch.zeros_like(local.bn1.running_mean))

    exported = gs.request("GET", f"/v1/jobs/{job.id}/export", params={"format": "pt2"})
    program = torch.export.load(io.BytesIO(exported.content))  # our own file, made by the service: safe to load
    with torch.no_grad():
        assert torch.equal(program.module()(x_val[:5]), local.eval()(x_val[:5]))
    onnx = gs.request("GET", f"/v1/jobs/{job.id}/export", params={"format": "onnx"})
    assert onnx.status_code == 200 and len(onnx.content) > 1000

    gs.request("DELETE", f"/v1/networks/{doc['id']}")  # the job and its forks keep their own copy
    child = job.fork(step=6, lr=0.01)
    done = child.wait(timeout=240)
    assert done["status"] == "succeeded", done.get("error")
    assert type(child.to_local()) is type(model)

    # Opened at step 8 (from the checkpoint at 6 and one replayed step), BatchNorm's statistics included: the
    # session's forward and the job's loss are the job's at step 8.
    net = job.session(step=8)
    loss = net.loss({"type": "CrossEntropyLoss"}, net(net.batch.inputs), net.batch.targets)
    assert loss.item() == gs.request("GET", f"/v1/jobs/{job.id}/metrics").json()["loss"][7]
    net.delete()
    seen = gs.http.get(f"/v1/jobs/{job.id}/activations", params={"step": 8, "layers": "bn1"})
    assert seen.status_code == 409 and "exported network" in seen.text  # not an empty answer


def test_a_job_of_a_two_input_network_is_refused_by_name(gs: gradserve.Client, service: Service) -> None:
    from gradserve.export_form import export_module

    case = CASES["bert"]
    torch.manual_seed(0)
    upload = export_module(case.make(), case.inputs(torch.Generator().manual_seed(0)), "logits")
    network = gs.upload_exported(upload)
    body = {
        "network_id": network["id"],
        "dataset": {"source": "random", "num_samples": 8, "input_shape": [10], "num_classes": 3},
        "criterion": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.1},
        "batch_size": 4,
        "steps": 1,
    }
    r = service.client("alice").post("/v1/jobs", json=body)
    assert r.status_code == 422 and "input_ids, attention_mask" in r.text, r.text


def test_a_sweep_searches_over_an_exported_network(gs: gradserve.Client) -> None:
    from api.routes.sweeps import EXAMPLE
    from gradserve.export_form import export_module

    net = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))  # nested: no catalogue spec
    network = gs.upload_exported(export_module(net, {"input": torch.zeros(2, 1, 8, 8)}))
    template = {k: v for k, v in EXAMPLE["template"].items() if k != "network"}
    template.update(network_id=network["id"], capture={"graph": False}, epochs=1, batch_size=64)
    space = {"optimizer.lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True}}
    sweep = gs.sweeps.create(template, space, max_trials=2, parallelism=1, pruner="none")
    doc = sweep.wait(timeout=300)
    assert [t["state"] for t in doc["trials"]] == ["complete"] * 2, doc
    assert 0 < sweep.best["value"] <= 1


class _Small(nn.Module):
    """Nested, with batch norm (buffers) and dropout (the RNG): what a resume must restore."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * 6 * 6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_an_exported_job_sigkilled_mid_run_resumes_bit_exact(gs: gradserve.Client, service: Service) -> None:
    from gradserve.export_form import export_module
    from tests.integration.jobs_helpers import submit, wait_final, wait_until

    torch.manual_seed(0)
    network = gs.upload_exported(export_module(_Small(), {"x": torch.zeros(2, 3, 8, 8)}))
    body = {
        "network_id": network["id"],
        "dataset": {"source": "random", "num_samples": 256, "input_shape": [3, 8, 8], "num_classes": 5},
        "criterion": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.05, "momentum": 0.9},
        "batch_size": 16,
        "steps": 600,
        "capture": {"checkpoint_every": 20, "graph": False},
    }
    client = service.client("alice")
    killed_id = submit(client, body)
    running = wait_until(client, killed_id, lambda d: d["status"] == "running" and (d["checkpoint_step"] or 0) >= 20)
    victim = next(w for w in service.workers() if w["name"] == running["worker"])
    os.kill(victim["pid"], signal.SIGKILL)
    assert client.get(f"/v1/jobs/{killed_id}").json()["step"] < 600, "finished before the kill; make it longer"
    whole_id = submit(client, body)
    killed, whole = wait_final(client, killed_id, timeout=240), wait_final(client, whole_id, timeout=240)
    assert killed["status"] == whole["status"] == "succeeded", (killed, whole)
    assert killed["attempt"] == 2
    assert client.get(f"/v1/jobs/{killed_id}/metrics").json()["step"] == list(range(1, 601))
    resumed = safetensors.torch.load(client.get(f"/v1/jobs/{killed_id}/checkpoint").content)
    uninterrupted = safetensors.torch.load(client.get(f"/v1/jobs/{whole_id}/checkpoint").content)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name
