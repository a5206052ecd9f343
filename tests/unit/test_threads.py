"""The launcher's split of the cores among the worker processes it starts."""

from __future__ import annotations

import pytest

from launcher.threads import split_threads, usable_cores


@pytest.mark.parametrize(
    ("cores", "jobs", "sessions", "expected"),
    [
        (2, 1, 1, (2, 1)),  # the default layout on a 2-core box: training keeps both cores
        (2, 2, 2, (1, 1)),  # never below one thread
        (16, 1, 1, (16, 8)),
        (16, 4, 4, (4, 2)),
        (1, 3, 1, (1, 1)),
    ],
)
def test_split(cores: int, jobs: int, sessions: int, expected: tuple[int, int]) -> None:
    assert split_threads(cores, jobs, sessions) == expected


def test_usable_cores_is_positive() -> None:
    assert usable_cores() >= 1
