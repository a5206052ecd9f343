"""A job record's numbers from its metric records: one rule for the worker's writes (worker.recorder) and a
fork's start (api.job_submit), which begins with its parent's records."""

from __future__ import annotations

from typing import Any

SUMMARY = ("step", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "samples_per_s", "overall_samples_per_s")


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number as the last record that has it gives it. Held-out metrics and the overall rate come on
    some records only: taking the last record alone left them stale (a job cancelled at step 356 showed
    its evaluation of step 69, and pruned trials none at all)."""
    latest: dict[str, Any] = {}
    for rec in records:
        latest.update((name, rec[name]) for name in SUMMARY if rec.get(name) is not None)
    return latest
