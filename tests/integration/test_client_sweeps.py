"""Forks and sweeps from Python and from the shell: ``job.fork``, ``client.sweeps``, ``sweep.watch``,
``gradserve jobs fork`` and ``gradserve sweeps ...`` against the live service."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from torch import nn

import gradserve
from api.routes.sweeps import EXAMPLE
from tests.conftest import API_KEYS, Service
from tests.integration.jobs_helpers import gradserve_cli

pytestmark = pytest.mark.integration

SPACE = {"optimizer.lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True}}


@pytest.fixture
def gs(service: Service) -> Iterator[gradserve.Client]:
    with gradserve.Client(service.url, api_key=API_KEYS["alice"]) as c:
        yield c


def template(**changes: Any) -> dict[str, Any]:
    """The API's documented sweep template (an MLP on digits), short."""
    body: dict[str, Any] = copy.deepcopy(EXAMPLE["template"])
    body.update({"capture": {"graph": False}, "epochs": 2, "batch_size": 64, **changes})
    return body


def test_fork_from_python_and_from_the_shell(gs: gradserve.Client, service: Service) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    sgd, digits, capture = torch.optim.SGD, {"source": "digits"}, {"checkpoint_every": 10}
    parent = gs.jobs.submit(net, digits, nn.CrossEntropyLoss(), sgd, lr=0.1, batch_size=64, steps=40, capture=capture)
    parent.wait()
    kept = [c["step"] for c in gs.request("GET", f"/v1/jobs/{parent.id}/checkpoints").json()["data"]]
    step = kept[0]
    assert 0 < step < 40, kept

    same = parent.fork(step=step)
    # A fresh fork knows its record at once: printed, it shows its real status (it was '?').
    assert same.last["parent"] == {"id": parent.id, "step": step}
    assert same.last["status"] in {"queued", "running", "succeeded"}
    assert repr(same) == f"Job('{same.id}', status={same.last['status']!r})"
    assert same.wait()["parent"] == {"id": parent.id, "step": step}
    mine, theirs = same.checkpoint(), parent.checkpoint()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # no changes: the parent's steps, bit for bit
    assert type(same.to_local()) is nn.Sequential  # the parent's module comes along

    adam = parent.fork(step=step, optimizer=torch.optim.Adam, lr=1e-3, name="adam branch")
    doc = adam.wait()
    assert doc["request"]["optimizer"]["type"] == "Adam" and doc["name"] == "adam branch"
    assert not torch.equal(adam.checkpoint()["1.weight"], theirs["1.weight"])

    shell = gradserve_cli(service, "jobs", "fork", parent.id, "--lr", "0.01", "--steps", "60", "--watch")
    assert shell.returncode == 0, (shell.stdout, shell.stderr)
    child = gs.jobs.get(shell.stdout.splitlines()[0])
    assert child.last["parent"] == {"id": parent.id, "step": 40} and child.last["total_steps"] == 60
    assert child.last["request"]["optimizer"]["lr"] == 0.01

    missing = gradserve_cli(service, "jobs", "fork", parent.id, "--step", "7")
    assert missing.returncode == 4 and "no checkpoint at step 7" in missing.stderr, missing.stderr
    bad = gradserve_cli(service, "jobs", "fork", parent.id, "--changes", "[1]")
    assert bad.returncode == 2 and "one JSON object" in bad.stderr


def test_sweep_from_python_draws_a_live_table_and_is_deleted_after(gs: gradserve.Client) -> None:
    sweep = gs.sweeps.create(template(), SPACE, max_trials=3, parallelism=1, pruner="none", name="client")
    with pytest.raises(gradserve.APIError) as refused:
        sweep.delete()
    assert refused.value.status == 409 and "cancel it first" in str(refused.value)

    screen = io.StringIO()
    doc = sweep.watch(Console(file=screen, force_terminal=True, width=200), poll_s=0.2)
    drawn = screen.getvalue()
    assert doc["status"] == "succeeded" and [t["state"] for t in doc["trials"]] == ["complete"] * 3, doc
    assert f"sweep {sweep.id} (client) succeeded: 3/3 trials (3 complete)" in drawn
    assert "optimizer.lr=" in drawn and "val_accuracy by epoch" in drawn

    best = sweep.best
    assert best is not None and best["value"] == max(t["value"] for t in doc["trials"])
    trial_job = sweep.job(best)
    assert trial_job.last["val_accuracy"] == best["value"] and trial_job.last["sweep"] == sweep.id
    assert sweep.wait(timeout=5)["status"] == "succeeded"

    sweep.delete()
    with pytest.raises(gradserve.APIError) as gone:
        gs.sweeps.get(sweep.id)
    assert gone.value.status == 404
    assert gs.jobs.get(trial_job.id).last["status"] == "succeeded"  # its trials stay, as jobs
    assert sweep.id not in [s["id"] for s in gs.sweeps.list()]


def test_sweeps_from_the_shell(service: Service, tmp_path: Path) -> None:
    file = tmp_path / "sweep.json"
    file.write_text(json.dumps({"template": template(), "space": SPACE, "max_trials": 2, "pruner": {"type": "none"}}))
    done = gradserve_cli(service, "sweeps", "create", str(file), "--watch")
    assert done.returncode == 0, (done.stdout, done.stderr)
    sweep_id = done.stdout.splitlines()[0]
    lines = done.stdout.splitlines()
    for n in (0, 1):  # a line per trial change; each trial ends once
        assert sum(line.startswith(f"trial {n} complete val_accuracy 0.") for line in lines) == 1, lines
    assert lines[-1].startswith(f"sweep {sweep_id} succeeded: 2/2 trials (2 complete); best val_accuracy")

    listed = {s["id"]: s for s in json.loads(gradserve_cli(service, "sweeps", "ls", "--json").stdout)}
    assert (listed[sweep_id]["trials"], listed[sweep_id]["max_trials"]) == (2, 2)
    shown_doc = json.loads(gradserve_cli(service, "sweeps", "show", sweep_id, "--json").stdout)
    assert listed[sweep_id]["best_value"] == shown_doc["best"]["value"] is not None
    done_only = json.loads(gradserve_cli(service, "sweeps", "ls", "--status", "succeeded", "--json").stdout)
    assert sweep_id in [s["id"] for s in done_only] and {s["status"] for s in done_only} == {"succeeded"}
    table = gradserve_cli(service, "sweeps", "ls")
    assert "maximize val_accuracy" in table.stdout and "2/2" in table.stdout
    shown = gradserve_cli(service, "sweeps", "show", sweep_id)
    assert shown.returncode == 0 and "2/2 trials" in shown.stdout and "optimizer.lr=" in shown.stdout
    again = gradserve_cli(service, "sweeps", "cancel", sweep_id)
    assert again.returncode == 4 and "409" in again.stderr and "already ended" in again.stderr

    file.write_text(json.dumps({"template": template(epochs=500), "space": SPACE, "max_trials": 2}))
    long_sweep = gradserve_cli(service, "sweeps", "create", str(file)).stdout.strip()
    cancelled = gradserve_cli(service, "sweeps", "cancel", long_sweep)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"{long_sweep} cancelled"
    watched = gradserve_cli(service, "sweeps", "watch", long_sweep)
    assert watched.returncode == 3 and f"sweep {long_sweep} cancelled" in watched.stdout, watched.stdout

    removed = gradserve_cli(service, "sweeps", "rm", sweep_id)
    assert removed.returncode == 0 and f"{sweep_id} deleted" in removed.stdout
    assert gradserve_cli(service, "sweeps", "show", sweep_id).returncode == 4
