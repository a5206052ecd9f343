"""A job's summary (GET /v1/jobs/{id}, the list) against its own metrics: the numbers it shows are the
last ones recorded, at every moment, whichever way the job ends."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.jobs_helpers import submit, wait_final, wait_until

# 23 steps an epoch, each a fraction of a millisecond: several held-out evaluations land in every
# batch of records the worker writes (every 100 ms), rarely as its last record.
DIGITS_MLP = {
    "network": {
        "name": "Mlp",
        "input_shape": [1, 8, 8],
        "layers": [
            {"type": "flatten", "start_dim": 1},
            {"name": "fc1", "type": "Linear", "in_features": 64, "out_features": 10},
        ],
    },
    "dataset": {"source": "digits"},
    "criterion": {"type": "CrossEntropyLoss"},
    "optimizer": {"type": "SGD", "lr": 0.05},
    "batch_size": 64,
    "seed": 0,
}


def last_evaluation(client: httpx.Client, job_id: str, step: int) -> dict[str, Any]:
    """The held-out numbers of the last evaluation recorded at or before ``step`` (None before the first)."""
    evals = client.get(f"/v1/jobs/{job_id}/metrics").json()["eval"]
    done = [i for i, s in enumerate(evals["step"]) if s <= step]
    if not done:
        return {"val_loss": None, "val_accuracy": None}
    return {"val_loss": evals["val_loss"][done[-1]], "val_accuracy": evals["val_accuracy"][done[-1]]}


def assert_summary_is_last_evaluation(client: httpx.Client, job_id: str) -> dict[str, Any]:
    # The summary and the records it sums up are written in one script, so the step read first bounds them.
    doc = client.get(f"/v1/jobs/{job_id}").json()
    shown = {"val_loss": doc["val_loss"], "val_accuracy": doc["val_accuracy"]}
    assert shown == last_evaluation(client, job_id, doc["step"]), (doc["status"], doc["step"])
    listed = client.get("/v1/jobs", params={"limit": 100}).json()["data"]
    row = next(j for j in listed if j["id"] == job_id)
    if row["step"] == doc["step"]:
        assert (row["val_loss"], row["val_accuracy"]) == (doc["val_loss"], doc["val_accuracy"])
    return doc


def test_summary_is_the_last_evaluation_while_running_cancelled_and_forked(client: httpx.Client) -> None:
    job_id = submit(client, {**DIGITS_MLP, "epochs": 5000})
    try:
        for epochs in (3, 10, 20):  # while it runs
            wait_until(client, job_id, lambda d, n=epochs: d["step"] >= 23 * n or d["status"] != "running")
            assert_summary_is_last_evaluation(client, job_id)
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")
    job = wait_final(client, job_id)
    assert job["status"] == "cancelled"
    assert assert_summary_is_last_evaluation(client, job_id)["val_loss"] is not None

    # A fork starts from its parent's history: its summary is the last evaluation in it, before it runs.
    fork = client.post(f"/v1/jobs/{job_id}/fork", json={"step": job["step"], "changes": {"steps": job["step"] + 1}})
    assert fork.status_code == 202, fork.text
    assert_summary_is_last_evaluation(client, fork.json()["id"])
    assert wait_final(client, fork.json()["id"])["status"] == "succeeded"
    assert_summary_is_last_evaluation(client, fork.json()["id"])


def test_rates_are_over_a_window_and_over_the_run(client: httpx.Client) -> None:
    job = wait_final(client, submit(client, {**DIGITS_MLP, "epochs": 10}))
    assert job["status"] == "succeeded"
    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()
    rates = metrics["samples_per_s"]
    assert len(rates) == 230 and all(r > 0 for r in rates)
    assert job["samples_per_s"] == rates[-1]  # the window at the end, as the bar showed it
    # Every sample the run trained (1,437 a epoch: digits less its held-out fifth) over at least the time
    # its records span, step 1 excluded: the overall rate cannot exceed that.
    span = metrics["t"][-1] - metrics["t"][0]
    assert 0 < job["overall_samples_per_s"] <= 1.01 * 10 * 1437 / span
    listed = client.get("/v1/jobs", params={"limit": 100}).json()["data"]
    assert next(j for j in listed if j["id"] == job["id"])["overall_samples_per_s"] == job["overall_samples_per_s"]
