"""The CUDA path without a GPU: the job's device on the worker (placement itself: tests/unit/test_placement.py)."""

from __future__ import annotations

import pytest
import torch

from worker.engine import choose_device


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
