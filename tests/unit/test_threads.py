"""The launcher's split of the cores among the worker processes it starts."""

from __future__ import annotations

import pytest

from launcher.threads import rank_threads, split_threads, usable_cores


@pytest.mark.parametrize(
    ("cores", "jobs", "sessions", "expected"),
    [
        (2, 1, 1, (1, 1)),  # the default layout on a 2-core box: one core each, none spinning on the other's
        (2, 2, 2, (1, 1)),  # never below one thread
        (4, 1, 1, (2, 1)),  # a core left for the API and Redis
        (16, 1, 1, (8, 7)),
        (16, 4, 4, (2, 1)),
        (1, 3, 1, (1, 1)),
    ],
)
def test_split(cores: int, jobs: int, sessions: int, expected: tuple[int, int]) -> None:
    assert split_threads(cores, jobs, sessions) == expected


@pytest.mark.parametrize("cores", range(1, 65))
def test_workers_never_run_more_threads_than_there_are_cores(cores: int) -> None:
    for jobs in range(1, 9):
        for sessions in range(0, 9):
            per_job, per_session = split_threads(cores, jobs, sessions)
            busy = jobs * per_job + sessions * per_session
            if jobs + sessions <= cores:  # else one thread each is already too many, and the least there is
                assert busy <= cores, (cores, jobs, sessions, per_job, per_session)
                if cores > 2:  # the API and Redis keep a core of their own
                    assert busy <= cores - 1 or jobs + sessions == cores
            else:
                assert (per_job, per_session) == (1, 1)


def test_usable_cores_is_positive() -> None:
    assert usable_cores() >= 1


@pytest.mark.parametrize(("threads", "ranks", "expected"), [(8, 2, 4), (7, 2, 3), (1, 2, 1), (2, 2, 1)])
def test_a_jobs_ranks_share_its_workers_threads(threads: int, ranks: int, expected: int) -> None:
    assert rank_threads(threads, ranks) == expected
