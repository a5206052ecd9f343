"""TensorBoard event files as the service writes them (tensorboardX), read back with tensorboard's own reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from models.wire.tensorboard import HISTOGRAM_BINS, event_file


def _read(tmp_path: Path, blob: bytes) -> EventAccumulator:
    (tmp_path / "events.out.tfevents.100.test").write_bytes(blob)
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_scalars_and_histograms_read_back(tmp_path: Path) -> None:
    values = np.random.default_rng(0).normal(size=1000)
    steps = [(step, 100.0 + step, {"train/loss": 1.0 / step, "train/lr": 0.1}) for step in range(1, 6)]
    blob = event_file([*steps, (5, 106.0, {"gradients/fc.weight": values.reshape(10, 100)})])

    acc = _read(tmp_path, blob)
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5]
    assert [e.value for e in loss] == [np.float32(1.0 / s) for s in range(1, 6)]
    assert loss[0].wall_time == 101.0
    (histo,) = acc.Histograms("gradients/fc.weight")
    assert histo.step == 5 and histo.histogram_value.num == 1000
    assert histo.histogram_value.min == values.min() and histo.histogram_value.max == values.max()
    assert sum(histo.histogram_value.bucket) == 1000 and len(histo.histogram_value.bucket) <= HISTOGRAM_BINS + 1


def test_a_histogram_counts_finite_values_and_a_nan_loss_is_kept(tmp_path: Path) -> None:
    diverged = np.array([1.0, np.inf, -2.0, np.nan])
    blob = event_file([(3, 1.0, {"train/loss": math.nan, "gradients/a": diverged, "gradients/b": np.full(4, np.nan)})])
    acc = _read(tmp_path, blob)
    assert math.isnan(acc.Scalars("train/loss")[0].value)
    (a,) = acc.Histograms("gradients/a")
    assert (a.histogram_value.num, a.histogram_value.min, a.histogram_value.max) == (2, -2.0, 1.0)
    (b,) = acc.Histograms("gradients/b")
    assert b.histogram_value.num == 0
