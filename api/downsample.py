"""Server-side downsampling of long metric series, so a chart of many long runs stays smooth.

Per bucket of consecutive steps the points kept are its extremes (min and max), plus the first and last
step overall: a spike or a divergence stays visible, unlike with a stride, and the shape is that of the full
series drawn at the chart's resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.wire.metric_values import as_float


def keep_indices(values: Sequence[object], points: int) -> list[int]:
    """Indices (ascending) of at most ``points`` values to draw in place of all of them."""
    n = len(values)
    if n <= points:
        return list(range(n))
    arr = np.array([as_float(v) for v in values], dtype=np.float64)
    buckets = max((points - 2) // 3, 1)  # up to three kept per bucket, plus the two ends
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep = {0, n - 1}
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        segment = arr[lo:hi]
        if segment.size == 0:
            continue
        finite = np.isfinite(segment)
        if not finite.all():  # a non-finite value is the news in its bucket: keep the first one
            keep.add(lo + int(np.argmin(finite)))
        if finite.any():
            masked = np.where(finite, segment, np.nan)
            keep.add(lo + int(np.nanargmin(masked)))
            keep.add(lo + int(np.nanargmax(masked)))
    return sorted(keep)
