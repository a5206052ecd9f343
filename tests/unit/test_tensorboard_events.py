"""The hand-written TensorBoard event files, read back with tensorboard's own reader."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from models.wire.tensorboard import Histogram, crc32c, event, header, tfrecord


def test_crc32c_is_castagnoli() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0


def test_tfrecord_framing() -> None:
    record = tfrecord(b"abc")
    assert struct.unpack("<Q", record[:8])[0] == 3 and record[12:15] == b"abc" and len(record) == 8 + 4 + 3 + 4


def test_scalars_and_histograms_read_back(tmp_path: Path) -> None:
    values = np.random.default_rng(0).normal(size=1000)
    blob = header(100.0)
    for step in range(1, 6):
        blob += event(wall_time=100.0 + step, step=step, values={"train/loss": 1.0 / step, "train/lr": 0.1})
    blob += event(wall_time=106.0, step=5, values={"gradients/fc.weight": Histogram.of(values)})
    (tmp_path / "events.out.tfevents.100.test").write_bytes(blob)

    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5]
    assert [e.value for e in loss] == [np.float32(1.0 / s) for s in range(1, 6)]
    assert loss[0].wall_time == 101.0
    (histo,) = acc.Histograms("gradients/fc.weight")
    assert histo.step == 5 and histo.histogram_value.num == 1000
    assert histo.histogram_value.min == values.min() and histo.histogram_value.max == values.max()
    assert sum(histo.histogram_value.bucket) == 1000
    assert np.isclose(histo.histogram_value.sum_squares, float(np.dot(values, values)))


def test_histogram_of_nothing_finite() -> None:
    assert Histogram.of([float("nan")]).num == 0.0
