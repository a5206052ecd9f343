"""Server-side downsampling: few points, and the ones that matter (ends, extremes, non-finite values) kept."""

from __future__ import annotations

import math
import random

from api.downsample import as_float, keep_indices


def test_short_series_are_kept_whole() -> None:
    assert keep_indices([3.0, 1.0, 2.0], 10) == [0, 1, 2]


def test_long_series_keep_ends_and_extremes_within_the_budget() -> None:
    rng = random.Random(0)
    values = [rng.gauss(0, 1) for _ in range(10_000)]
    values[4321] = 50.0  # a spike a stride would miss
    values[777] = -50.0
    kept = keep_indices(values, 200)
    assert len(kept) <= 200 and kept == sorted(set(kept))
    assert kept[0] == 0 and kept[-1] == 9_999
    assert 4321 in kept and 777 in kept


def test_non_finite_values_stay_visible() -> None:
    values: list[object] = [1.0] * 5_000
    values[2_500] = "nan"
    values[4_000] = None
    kept = keep_indices(values, 50)
    assert 2_500 in kept and 4_000 in kept and len(kept) <= 50


def test_as_float_reads_the_wire_forms() -> None:
    assert as_float(2) == 2.0 and as_float("inf") == math.inf
    assert math.isnan(as_float("nan")) and math.isnan(as_float(None)) and math.isnan(as_float("x"))
