"""Jobs from Python and from the CLI: watch shows progress and ends with the final state, to_local scores
what the job reported, and the CLI's exit codes say succeeded / failed / cancelled."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

import gradserve
from tests.conftest import API_KEYS, Service
from tests.integration.jobs_helpers import gradserve_cli, mlp_job
from worker.datasets import _digits

pytestmark = pytest.mark.integration


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


DIGITS = {"source": "digits", "image_size": 8}


@pytest.fixture
def gs(service: Service) -> Iterator[gradserve.Client]:
    with gradserve.Client(service.url, api_key=API_KEYS["alice"]) as c:
        yield c


def test_watch_draws_progress_and_to_local_scores_what_the_job_reported(gs: gradserve.Client) -> None:
    job = gs.jobs.submit(Mlp(), DIGITS, nn.CrossEntropyLoss(), torch.optim.SGD, lr=0.1, batch_size=64, epochs=3)
    screen = io.StringIO()
    final = job.watch(Console(file=screen, force_terminal=True, width=160))
    drawn = screen.getvalue()
    assert final["status"] == "succeeded"
    assert f"{final['total_steps']}/{final['total_steps']}" in drawn and "samples/s" in drawn and "loss" in drawn
    assert f"job {job.id} succeeded: step 69/69  loss" in drawn.rstrip().splitlines()[-1]

    model = job.to_local()
    assert type(model) is Mlp
    _, _, x_val, y_val = _digits(8, 0.2, 0, True)
    before = torch.get_num_threads()
    torch.set_num_threads(final["threads"] or before)
    try:
        with torch.no_grad():
            accuracy = int((model.eval()(x_val).argmax(1) == y_val).sum()) / y_val.numel()
    finally:
        torch.set_num_threads(before)
    assert accuracy == final["val_accuracy"] and accuracy > 0.8

    columns = job.metrics()
    assert columns["step"][-1] == final["total_steps"] and len(columns["loss"]) == final["total_steps"]
    assert columns["eval"]["val_accuracy"][-1] == final["val_accuracy"]
    assert any(j["id"] == job.id for j in gs.jobs.list(status="succeeded"))


def test_watch_as_plain_lines_and_a_dataset_from_numpy(gs: gradserve.Client) -> None:
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((96, 4), dtype=np.float32)
    targets = (inputs[:, 0] > 0).astype(np.int64)
    data = gs.datasets.upload(inputs, targets, test_inputs=inputs[:32], test_targets=targets[:32])
    assert data.num_samples == 96 and data.input_shape == [4]
    net = nn.Sequential(nn.Sequential(nn.Linear(4, 2)))  # a container in a container: no catalogue spec
    with pytest.raises(gradserve.SpecError, match="direct attributes"):
        gs.jobs.submit(net, data, batch_size=16, steps=1, format="spec")
    spec = {"name": "Tiny", "layers": [{"name": "fc", "type": "Linear", "in_features": 4, "out_features": 2}]}
    job = gs.jobs.submit(spec, data, "CrossEntropyLoss", {"type": "Adam", "lr": 0.05}, batch_size=16, epochs=2)
    screen = io.StringIO()
    final = job.watch(Console(file=screen, force_terminal=False))
    lines = screen.getvalue().splitlines()
    assert any(line.startswith("step ") and "loss" in line for line in lines)
    assert lines[-1].startswith(f"job {job.id} succeeded: step 12/12")
    assert final["val_accuracy"] is not None
    assert job.to_local().fc.weight.shape == (2, 4)


def test_a_dataset_by_its_id(gs: gradserve.Client) -> None:
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((48, 4), dtype=np.float32)
    data = gs.datasets.upload(inputs, (inputs[:, 1] > 0).astype(np.int64))
    found = gs.datasets.get(data.id)
    assert found == data and found.input_shape == [4]
    assert data.id in [d.id for d in gs.datasets.list(limit=500)]
    job = gs.jobs.submit(nn.Linear(4, 2), data.id, "CrossEntropyLoss", "SGD", lr=0.1, batch_size=16, steps=3)
    assert job.request()["dataset"] == {"source": "upload", "id": data.id}
    assert job.wait()["step"] == 3
    with pytest.raises(gradserve.APIError, match="404"):
        gs.datasets.get("data_missing")


def test_async_client_submits_and_waits(service: Service) -> None:
    async def run() -> dict:
        async with gradserve.AsyncClient(service.url, api_key=API_KEYS["alice"]) as ac:
            job = await ac.jobs.submit(Mlp(), DIGITS, optimizer="SGD", lr=0.05, batch_size=128, steps=3)
            done = await job.wait(timeout=120)
            state = await job.checkpoint()
            return {"done": done, "keys": sorted(state)}

    out = asyncio.run(run())
    assert out["done"]["status"] == "succeeded" and out["keys"] == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]


def _job_file(tmp_path: Path, name: str, **changes: object) -> Path:
    body = {
        "network": {
            "name": "Mlp",
            "input_shape": [1, 8, 8],
            "layers": [
                {"type": "flatten", "start_dim": 1},
                {"name": "fc1", "type": "Linear", "in_features": 64, "out_features": 10},
            ],
        },
        "dataset": DIGITS,
        "criterion": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.1},
        "batch_size": 64,
        "steps": 20,
        **changes,
    }
    path = tmp_path / name
    if name.endswith(".yaml"):
        import yaml

        path.write_text(yaml.safe_dump(body))
    else:
        path.write_text(json.dumps(body))
    return path


def test_cli_exit_codes_for_succeeded_failed_and_cancelled(service: Service, gs: gradserve.Client, tmp_path) -> None:
    ok = gradserve_cli(service, "jobs", "submit", str(_job_file(tmp_path, "ok.yaml")), "--watch")
    assert ok.returncode == 0, ok.stderr
    job_id = ok.stdout.splitlines()[0]
    assert f"job {job_id} succeeded: step 20/20" in ok.stdout

    bad = tmp_path / "nan.json"
    bad.write_text(json.dumps(mlp_job(optimizer={"type": "SGD", "lr": 1e4}, steps=50)))
    failed = gradserve_cli(service, "jobs", "submit", str(bad), "--watch")
    assert failed.returncode == 1 and "failed" in failed.stdout and "loss is" in failed.stdout, (
        failed.stdout,
        failed.stderr,
    )

    long_job = gs.jobs.submit_body(json.loads(_job_file(tmp_path, "long.json", steps=200_000).read_text()))
    long_job.cancel()
    cancelled = gradserve_cli(service, "jobs", "watch", long_job.id)
    assert cancelled.returncode == 3 and f"job {long_job.id} cancelled" in cancelled.stdout, cancelled.stdout

    listed = gradserve_cli(service, "jobs", "ls", "--json", "--limit", "50")
    statuses = {j["id"]: j["status"] for j in json.loads(listed.stdout)}
    assert statuses[job_id] == "succeeded" and statuses[long_job.id] == "cancelled"

    out = tmp_path / "w.safetensors"
    saved = gradserve_cli(service, "jobs", "checkpoint", job_id, "-o", str(out))
    assert saved.returncode == 0 and sorted(safetensors.torch.load_file(out)) == ["fc1.bias", "fc1.weight"]

    missing = gradserve_cli(service, "jobs", "watch", "job_nope", "--url", service.url)
    assert missing.returncode == 4 and "404" in missing.stderr
    denied = gradserve_cli(service, "jobs", "ls", "--api-key", "wrong-key")
    assert denied.returncode == 4 and "401" in denied.stderr


def test_cli_sessions_rm(service: Service, gs: gradserve.Client) -> None:
    rnet = gs.remote(Mlp(), input_shape=[64])
    sid = rnet.id
    removed = gradserve_cli(service, "sessions", "rm", sid)
    assert removed.returncode == 0 and f"{sid} deleted" in removed.stdout
    again = gradserve_cli(service, "sessions", "rm", sid)
    assert again.returncode == 4 and "404" in again.stderr
