"""A worker stops an export at its call's deadline rather than holding the lane after the API gave up."""

from __future__ import annotations

import time

import pytest

from models.errors import Timeout
from worker.exports import deadline


def test_a_task_past_its_deadline_is_stopped_with_a_504() -> None:
    started = time.monotonic()
    with pytest.raises(Timeout, match="GRADSERVE_EXPORT_TIMEOUT_S"), deadline(time.time() + 0.05, "export"):
        while time.monotonic() - started < 5:  # pure Python work, like an exporter tracing a graph
            sum(range(1000))
    assert time.monotonic() - started < 2


def test_a_task_within_its_deadline_is_left_alone() -> None:
    with deadline(time.time() + 5, "export"):
        pass
    time.sleep(0.01)  # the timer was cleared: no SIGALRM after the block
