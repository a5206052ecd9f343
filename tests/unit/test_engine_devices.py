"""The CUDA path without a GPU: device choice on the worker and queue routing in the API."""

from __future__ import annotations

import pytest
import torch

from models.spec.job import choose_queue
from models.tasks import QUEUE_CPU, QUEUE_GPU
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
    assert choose_queue(device, workers) == queue
