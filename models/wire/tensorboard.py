"""TensorBoard event files, written by tensorboardX's FileWriter: the TFRecord framing, the CRCs and the
``Event``/``Summary`` protobufs are the library's (it needs numpy and protobuf, not TensorFlow or tensorboard
itself, whose server and its dependencies would weigh some 60 MB on the API). The tests read the files back
with tensorboard's own reader."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tensorboardX import FileWriter
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.summary import histogram, histogram_raw

HISTOGRAM_BINS = 30
# A scalar, or the values (any shape) that one histogram counts.
Value = float | npt.NDArray[np.floating]


def summary(values: Mapping[str, Value]) -> Summary:
    """One step's scalars and histograms; a histogram counts the finite values only (a diverged gradient's
    inf and nan would fail the library's binning), and one with none left is empty."""
    out = Summary()
    for tag, value in values.items():
        if isinstance(value, np.ndarray):
            flat = value.astype(np.float64).ravel()
            flat = flat[np.isfinite(flat)]
            made = (
                histogram(tag, flat, bins=HISTOGRAM_BINS) if flat.size else histogram_raw(tag, 0, 0, 0, 0, 0, [0], [0])
            )
            out.value.extend(made.value)
        else:
            out.value.add(tag=tag, simple_value=float(value))
    return out


def event_file(steps: Iterable[tuple[int, float, Mapping[str, Value]]]) -> bytes:
    """One event file holding, for each ``(step, wall time, values)``, one event of the step's values."""
    with tempfile.TemporaryDirectory(prefix="gradserve-tb-") as logdir:
        # The writer's thread flushes on close; the queue bound only sets how often it wakes before that.
        writer = FileWriter(logdir, max_queue=1024, flush_secs=3600)
        try:
            for step, wall_time, values in steps:
                writer.add_summary(summary(values), global_step=step, walltime=wall_time)
        finally:
            writer.close()
        (path,) = Path(logdir).iterdir()
        return path.read_bytes()
