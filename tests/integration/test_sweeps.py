"""Sweeps against the live service: Optuna trials as ordinary jobs, pruning, cancel, a sweeper's death."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from api.routes.sweeps import EXAMPLE
from tests.conftest import Service, detail_of
from tests.integration.jobs_helpers import wait_for


def sweep_body(**overrides: Any) -> dict[str, Any]:
    """The API's documented example (digits, lr and momentum), with ``overrides``."""
    body = copy.deepcopy(EXAMPLE)
    body["template"]["capture"] = {"graph": False}
    # Long enough (~1-2 s a trial here) that the controller sees held-out records between epochs: a trial
    # that ends before any poll can only be told complete, never pruned.
    body["template"]["epochs"] = 30
    body["pruner"] = {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1}
    body.update(overrides)
    return body


def wait_sweep(client: httpx.Client, sweep_id: str, until: Any, timeout: float = 180) -> dict[str, Any]:
    return wait_for(client, f"/v1/sweeps/{sweep_id}", until, timeout, pause=0.3)


def test_sweep_prunes_and_finds_a_good_configuration(client: httpx.Client) -> None:
    r = client.post("/v1/sweeps", json=sweep_body(name="lr-momentum"))
    assert r.status_code == 202, r.text
    sweep_id = r.json()["id"]
    doc = wait_sweep(client, sweep_id, lambda d: d["status"] != "running")
    assert doc["status"] == "succeeded", doc
    trials = doc["trials"]
    assert len(trials) == 12 and {t["state"] for t in trials} <= {"complete", "pruned"}, trials
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned, trials
    assert doc["best"]["value"] >= 0.95, doc["best"]
    assert set(doc["importances"]) == {"optimizer.lr", "optimizer.momentum"}
    # A trial is an ordinary job, tagged with its sweep; a pruned one ends "pruned" there too.
    job = client.get(f"/v1/jobs/{pruned[0]['job_id']}").json()
    assert job["status"] == "pruned" and job["sweep"] == sweep_id, job
    assert job["step"] < job["total_steps"]
    best_job = client.get(f"/v1/jobs/{doc['best']['job_id']}").json()
    assert best_job["status"] == "succeeded" and best_job["val_accuracy"] == doc["best"]["value"]
    tagged = client.get("/v1/jobs", params={"tag": f"sweep={sweep_id}", "limit": 50}).json()
    assert tagged["total"] == 12
    listed = client.get("/v1/sweeps").json()["data"]
    assert sweep_id in [s["id"] for s in listed]


def test_cancelling_a_sweep_cancels_its_running_trials(client: httpx.Client) -> None:
    body = sweep_body(pruner={"type": "none"}, max_trials=6)
    body["template"]["epochs"] = 200  # far longer than the test waits
    sweep_id = client.post("/v1/sweeps", json=body).json()["id"]
    wait_sweep(client, sweep_id, lambda d: sum(t["job_id"] is not None for t in d["trials"]) == 2, timeout=60)
    r = client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
    doc = wait_sweep(client, sweep_id, lambda d: all(t["state"] != "running" for t in d["trials"]), timeout=60)
    assert doc["status"] == "cancelled" and len(doc["trials"]) == 2, doc
    for trial in doc["trials"]:
        assert trial["state"] == "cancelled"
        assert client.get(f"/v1/jobs/{trial['job_id']}").json()["status"] == "cancelled"
    assert client.post(f"/v1/sweeps/{sweep_id}/cancel").status_code == 409
    # The controller lets a sweep go (its DELETE stops answering 409) in the pass that sees it ended; from then
    # on nothing can start a trial of it, so its jobs are counted for good.
    deadline = time.monotonic() + 60
    while (gone := client.delete(f"/v1/sweeps/{sweep_id}")).status_code == 409:
        assert time.monotonic() < deadline, gone.text
        time.sleep(0.1)
    assert gone.status_code == 204, gone.text
    assert client.get("/v1/jobs", params={"tag": f"sweep={sweep_id}"}).json()["total"] == 2


def test_a_bad_space_is_a_422_naming_the_path(client: httpx.Client) -> None:
    body = sweep_body(space={"optimizer.momentun": {"type": "float", "low": 0, "high": 0.9}})
    body["template"]["optimizer"] = {"type": "Adam", "lr": 0.01}
    r = client.post("/v1/sweeps", json=body)
    assert r.status_code == 422, r.text
    assert "optimizer.momentun" in detail_of(r)["msg"]
    r = client.post("/v1/sweeps", json=sweep_body(space={"lr_scheduler.gamma": {"type": "float", "low": 0, "high": 1}}))
    assert r.status_code == 422 and detail_of(r)["loc"] == ["body", "space", "lr_scheduler.gamma"], r.text
    # A width range keeps the next Linear consistent, so it is valid; a width of 0 is not.
    ok = sweep_body(space={"network.layers.1.out_features": {"type": "int", "low": 8, "high": 64}}, max_trials=1)
    bad = sweep_body(space={"network.layers.1.out_features": {"type": "int", "low": 0, "high": 64}})
    assert client.post("/v1/sweeps", json=bad).status_code == 422
    sweep_id = client.post("/v1/sweeps", json=ok).json()["id"]
    client.post(f"/v1/sweeps/{sweep_id}/cancel")
    r = client.post("/v1/sweeps", json=sweep_body(parallelism=50))
    assert r.status_code == 422 and detail_of(r)["loc"] == ["body", "parallelism"], r.text
    # Planned like a job: a corner past the step limit names its path; no held-out split, no objective.
    r = client.post("/v1/sweeps", json=sweep_body(space={"epochs": {"type": "int", "low": 1, "high": 10**8}}))
    assert r.status_code == 422 and detail_of(r)["loc"] == ["body", "space", "epochs"], r.text
    assert "GRADSERVE_MAX_STEPS" in detail_of(r)["msg"]
    no_split = sweep_body()
    no_split["template"]["dataset"] = {"source": "digits", "test_fraction": 0}
    r = client.post("/v1/sweeps", json=no_split)
    assert r.status_code == 422 and detail_of(r)["loc"] == ["body", "template", "dataset"], r.text
    assert "held-out split" in detail_of(r)["msg"]


def test_a_sweep_whose_trials_all_fail_fails_and_val_loss_is_minimized(client: httpx.Client) -> None:
    body = sweep_body(max_trials=2, objective={"metric": "val_loss"}, pruner={"type": "none"})
    # BatchNorm in training mode cannot normalise a batch of one sample: every trial fails at its first step.
    body["template"]["network"]["layers"].insert(2, {"type": "BatchNorm1d", "num_features": 32})
    body["template"]["batch_size"] = 1
    sweep_id = client.post("/v1/sweeps", json=body).json()["id"]
    doc = wait_sweep(client, sweep_id, lambda d: d["status"] != "running")
    assert doc["objective"] == {"metric": "val_loss", "direction": "minimize"}
    assert doc["status"] == "failed" and doc["best"] is None, doc["trials"]
    assert [t["state"] for t in doc["trials"]] == ["failed", "failed"]


def test_a_standby_sweeper_takes_over_a_sweep_from_a_killed_leader(service: Service, client: httpx.Client) -> None:
    """Sweeps are driven by one sweeper process at a time; its state is in Redis (ours and Optuna's journal),
    so when the leader is SIGKILLed a standby (or the one `gradserve up` restarts) finishes the sweep."""
    body = sweep_body(max_trials=3, parallelism=1, pruner={"type": "none"})
    body["template"].update(epochs=2, batch_size=64)
    leader = client.get("/readyz").json()["sweeper"]
    assert leader is not None and leader["pid"] != service.proc.pid, leader
    env = {**os.environ, "REDIS_URL": service.redis_url}
    standby = subprocess.Popen([sys.executable, "-m", "launcher", "sweeper"], env=env, stderr=subprocess.PIPE)
    try:
        sweep_id = client.post("/v1/sweeps", json=body).json()["id"]
        before = wait_sweep(client, sweep_id, lambda d: any(t["state"] == "complete" for t in d["trials"]))
        assert before["status"] == "running", before
        assert client.get("/readyz").json()["sweeper"] == leader  # the standby stood by
        os.kill(leader["pid"], signal.SIGKILL)
        wait_for(client, "/readyz", lambda d: d.get("sweeper") not in (None, leader), timeout=30)
        doc = wait_sweep(client, sweep_id, lambda d: d["status"] != "running")
    finally:
        standby.terminate()
        standby.wait(timeout=30)
    assert standby.returncode == 0, standby.stderr.read() if standby.stderr else ""
    assert doc["status"] == "succeeded", doc
    assert [t["number"] for t in doc["trials"]] == [0, 1, 2]
    assert all(t["state"] == "complete" for t in doc["trials"]), doc["trials"]
    for old in before["trials"]:  # the trials finished before the takeover are kept as they were
        if old["state"] == "complete":
            assert doc["trials"][old["number"]] == old


def test_a_sweep_without_a_seed_draws_one_and_records_it_for_a_replay(client: httpx.Client) -> None:
    body = sweep_body(max_trials=1, pruner={"type": "none"})
    body["template"]["epochs"] = 1
    assert "seed" not in body
    first, second = (client.post("/v1/sweeps", json=body).json()["id"] for _ in range(2))
    a, b = (wait_sweep(client, s, lambda d: d["status"] != "running") for s in (first, second))
    assert a["seed"] != b["seed"]  # two sweeps of one body no longer draw the same trials
    assert a["trials"][0]["params"] != b["trials"][0]["params"]
    replay = client.post("/v1/sweeps", json={**body, "seed": a["seed"]}).json()["id"]
    again = wait_sweep(client, replay, lambda d: d["status"] != "running")
    assert again["seed"] == a["seed"] and again["trials"][0]["params"] == a["trials"][0]["params"]
