"""`gradserve up` restarts a dead API with a growing delay, and gives up on one that keeps dying."""

from __future__ import annotations

import itertools

from launcher.supervisor import API_RESTART_DELAYS_S, API_RESTART_WINDOW_S, ApiRestarts


def test_backoff_grows_then_gives_up_within_the_window() -> None:
    restarts = ApiRestarts()
    delays = [restarts.delay_after_death(100.0 + i) for i in range(len(API_RESTART_DELAYS_S) + 1)]
    waits = [d for d in delays if d is not None]
    assert len(waits) == len(API_RESTART_DELAYS_S) and delays[-1] is None
    assert waits[0] <= 1 and all(a < b for a, b in itertools.pairwise(waits))


def test_deaths_far_apart_restart_at_once_every_time() -> None:
    restarts = ApiRestarts()
    spaced = [restarts.delay_after_death(i * (API_RESTART_WINDOW_S + 1)) for i in range(10)]
    assert spaced == [API_RESTART_DELAYS_S[0]] * 10
