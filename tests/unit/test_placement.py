"""Placement as a pure function: which queue and device the API picks from the live workers, and what the
worker that takes the work runs it on."""

from __future__ import annotations

from typing import Any

import pytest

from models.errors import InvalidInput, ServiceUnavailable
from models.placement import (
    LANE_JOBS,
    LANE_QUEUES,
    LANE_SESSIONS,
    QUEUE_CPU,
    QUEUE_GPU,
    QUEUE_SESSIONS_CPU,
    QUEUE_SESSIONS_GPU,
    Placement,
    lane_queues,
    lanes_of,
    place,
    worker_device,
)

CPU_WORKER = {"name": "a", "device": "cpu", "queues": [QUEUE_CPU]}
GPU_WORKER = {"name": "b", "device": "cuda", "queues": [QUEUE_CPU, QUEUE_GPU]}
SESSION_CPU = {"name": "c", "device": "cpu", "queues": [QUEUE_SESSIONS_CPU]}
SESSION_GPU = {"name": "d", "device": "cuda", "queues": [QUEUE_SESSIONS_CPU, QUEUE_SESSIONS_GPU]}


@pytest.mark.parametrize(
    ("device", "workers", "expected"),
    [
        ("cuda", [CPU_WORKER, GPU_WORKER], Placement("cuda", QUEUE_GPU)),
        ("auto", [CPU_WORKER, GPU_WORKER], Placement("cuda", QUEUE_GPU)),
        ("auto", [CPU_WORKER], Placement("cpu", QUEUE_CPU)),
        ("auto", [], Placement("cpu", QUEUE_CPU)),  # a job waits in its queue for a worker to start
        ("cpu", [GPU_WORKER], Placement("cpu", QUEUE_CPU)),
        ("auto", [SESSION_GPU], Placement("cpu", QUEUE_CPU)),  # a session worker's GPU is not the jobs lane's
    ],
)
def test_jobs_are_placed_from_the_live_workers(device: str, workers: list[dict[str, Any]], expected: Placement) -> None:
    assert place(LANE_JOBS, device, workers) == expected


@pytest.mark.parametrize(
    "workers",
    [
        [CPU_WORKER],
        [],
        [{**GPU_WORKER, "queues": [QUEUE_CPU]}],
        [SESSION_GPU],
    ],  # the third: a GPU box off the gpu queue
)
def test_cuda_with_no_gpu_worker_of_the_lane_is_refused_on_the_device_field(workers: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidInput, match="CUDA") as refused:
        place(LANE_JOBS, "cuda", workers)
    assert refused.value.loc == ("body", "device")


def test_sessions_are_placed_on_their_own_lane() -> None:
    assert place(LANE_SESSIONS, "auto", [GPU_WORKER, SESSION_CPU]) == Placement("cpu", QUEUE_SESSIONS_CPU)
    assert place(LANE_SESSIONS, "auto", [SESSION_GPU]) == Placement("cuda", QUEUE_SESSIONS_GPU)
    assert place(LANE_SESSIONS, "cpu", [SESSION_GPU]) == Placement("cpu", QUEUE_SESSIONS_CPU)
    with pytest.raises(InvalidInput, match="no live session worker has a GPU"):
        place(LANE_SESSIONS, "cuda", [GPU_WORKER, SESSION_CPU])


@pytest.mark.parametrize("workers", [[], [CPU_WORKER, GPU_WORKER]])
def test_a_session_with_no_session_worker_alive_is_refused_at_once(workers: list[dict[str, Any]]) -> None:
    with pytest.raises(ServiceUnavailable, match="--lane sessions"):
        place(LANE_SESSIONS, "auto", workers)


@pytest.mark.parametrize(
    ("requested", "cuda", "expected"),
    [
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        ("cpu", True, "cpu"),
        ("cuda", True, "cuda"),
        ("cuda", False, None),
    ],
)
def test_the_worker_picks_its_device(requested: str, cuda: bool, expected: str | None) -> None:
    assert worker_device(requested, cuda) == expected


def test_a_worker_consumes_the_queues_it_is_placed_on() -> None:
    """What a worker consumes (lane_queues) and what its heartbeat says it serves (lanes_of) agree with place()."""
    for lane, (cpu_queue, gpu_queue) in LANE_QUEUES.items():
        assert lane_queues(lane, gpu=False) == cpu_queue
        assert lane_queues(lane, gpu=True) == f"{cpu_queue},{gpu_queue}"
        gpu_box = {"device": "cuda", "queues": lane_queues(lane, gpu=True).split(",")}
        assert lanes_of(gpu_box["queues"]) == [lane]
        assert place(lane, "cuda", [gpu_box]) == Placement("cuda", gpu_queue)
