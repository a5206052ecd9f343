"""Samples/s over a window of wall time, on a synthetic clock: what a job reports against what it did."""

from __future__ import annotations

import pytest
import torch

from tests.unit.test_engine import _data, _trainer
from worker.engine import ListHooks, TrainConfig
from worker.throughput import Throughput

BATCH = 64


def stalling_run(steps: int, stall_every: int = 10) -> tuple[list[float], list[float | None], Throughput]:
    """1 ms steps of 64 samples, every 10th 100 ms longer (a flush, an evaluation): what a loop sees."""
    meter, now, per_step, windowed = Throughput(start=0.0), 0.0, [], []
    for step in range(1, steps + 1):
        took = 0.001 + (0.1 if step % stall_every == 0 else 0.0)
        now += took
        per_step.append(BATCH / took)
        windowed.append(meter.add(now, BATCH))
    return per_step, windowed, meter


def test_the_window_rate_holds_steady_where_each_step_swings() -> None:
    per_step, windowed, meter = stalling_run(500)
    cycle_rate = 10 * BATCH / (10 * 0.001 + 0.1)  # what the loop sustains: 5,818 samples/s
    assert max(per_step) / min(per_step) > 100  # the old figure: 64,000 against 634 in one job
    settled = [r for r in windowed[100:] if r is not None]  # a second in, the window is full
    assert len(settled) == 400
    assert all(0.9 * cycle_rate <= r <= 1.1 * cycle_rate for r in settled), (min(settled), max(settled))
    total_time = 500 * 0.001 + 50 * 0.1
    assert meter.overall() == pytest.approx(500 * BATCH / total_time)


def test_a_step_longer_than_the_window_is_its_own_rate() -> None:
    meter = Throughput(start=10.0, window_s=1.0)
    assert meter.add(10.5, 32) == pytest.approx(64.0)  # from the start
    assert meter.add(13.5, 32) == pytest.approx(32 / 3.0)  # the first step left the window
    assert meter.overall() == pytest.approx(64 / 3.5)
    assert Throughput(start=1.0).overall() is None


def test_records_carry_the_window_rate_and_the_overall_rate() -> None:
    cfg = TrainConfig(total_steps=30, batch_size=8, seed=1, flush_every=7, flush_interval_s=1e9)
    hooks = ListHooks()
    _trainer(cfg, _data(n=40, classes=False)).run(hooks)
    records = hooks.all_records
    assert all(r["samples_per_s"] > 0 for r in records)
    # The overall rate is a summary: on the last record of each batch the worker writes, the last one included.
    overall = [r["step"] for r in records if "overall_samples_per_s" in r]
    assert overall[-1] == 30 and overall[:4] == [1, 8, 15, 22]
    assert all(r["overall_samples_per_s"] > 0 for r in records if "overall_samples_per_s" in r)
    assert torch.tensor([r["samples_per_s"] for r in records]).isfinite().all()
