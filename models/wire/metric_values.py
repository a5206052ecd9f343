"""Metric values as they travel in records: numbers, or the strings non-finite values are written as."""

from __future__ import annotations


def as_float(value: object) -> float:
    """A metric value as a float; the "nan"/"inf" strings non-finite values travel as, and None, are NaN."""
    if isinstance(value, bool) or value is None:
        return float("nan")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return float("nan")
