"""The CUDA path without a GPU: device choice on the worker and queue routing in the API."""

from __future__ import annotations

import pytest
import torch

from models.tasks import LANE_JOBS, LANE_SESSIONS, QUEUE_CPU, QUEUE_GPU, QUEUE_SESSIONS_CPU, QUEUE_SESSIONS_GPU, place
from worker.engine import choose_device

CPU_WORKER = {"name": "a", "device": "cpu", "queues": [QUEUE_CPU]}
GPU_WORKER = {"name": "b", "device": "cuda", "queues": [QUEUE_CPU, QUEUE_GPU]}


@pytest.mark.parametrize(
    ("requested", "cuda", "expected"),
    [
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        ("cpu", True, "cpu"),
        ("cpu", False, "cpu"),
        ("cuda", True, "cuda"),
    ],
)
def test_device_choice(requested: str, cuda: bool, expected: str) -> None:
    assert choose_device(requested, cuda) == torch.device(expected)


def test_cuda_on_a_cpu_worker_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no CUDA device"):
        choose_device("cuda", False)


@pytest.mark.parametrize(
    ("device", "workers", "queue"),
    [
        ("cuda", [CPU_WORKER, GPU_WORKER], QUEUE_GPU),
        ("cuda", [CPU_WORKER], None),  # the API answers 422 instead of queueing forever
        ("cuda", [], None),
        ("auto", [CPU_WORKER, GPU_WORKER], QUEUE_GPU),
        ("auto", [CPU_WORKER], QUEUE_CPU),
        ("cpu", [GPU_WORKER], QUEUE_CPU),
        ("cuda", [{**GPU_WORKER, "queues": [QUEUE_CPU]}], None),  # a GPU box that does not consume the gpu queue
    ],
)
def test_queue_routing(device: str, workers: list[dict], queue: str | None) -> None:
    placed = place(LANE_JOBS, device, workers)
    assert (placed and placed[1]) == queue


def test_sessions_are_placed_on_their_own_lane() -> None:
    session_gpu = {"device": "cuda", "queues": [QUEUE_SESSIONS_CPU, QUEUE_SESSIONS_GPU]}
    assert place(LANE_SESSIONS, "auto", [GPU_WORKER]) == ("cpu", QUEUE_SESSIONS_CPU)  # a job worker's GPU is not ours
    assert place(LANE_SESSIONS, "auto", [session_gpu]) == ("cuda", QUEUE_SESSIONS_GPU)
    assert place(LANE_SESSIONS, "cuda", [GPU_WORKER]) is None
