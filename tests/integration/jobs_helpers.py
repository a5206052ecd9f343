"""Shared by the job tests: request builders, waiting, reading server-sent events."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import torch
import torch.nn.functional as F
from torch import nn

from gradserve.protocol import JOB_TERMINAL, parse_events
from tests.conftest import API_KEYS, ROOT, Service
from tests.lenet import LENET_SPEC

FINAL = JOB_TERMINAL
MLP = {
    "name": "MLP",
    "input_shape": [6],
    "layers": [
        {"name": "fc1", "type": "Linear", "in_features": 6, "out_features": 16},
        {"type": "relu"},
        {"name": "fc2", "type": "Linear", "in_features": 16, "out_features": 3},
    ],
}


class LocalMLP(nn.Module):
    """``MLP`` hand-written, as a user would: the local side of tests against ``mlp_job``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def mlp_job(**overrides: Any) -> dict[str, Any]:
    body = {
        "network": MLP,
        "dataset": {"source": "random", "num_samples": 40, "seed": 1},
        "criterion": {"type": "MSELoss"},
        "optimizer": {"type": "SGD", "lr": 0.05, "momentum": 0.9},
        "batch_size": 8,
        "steps": 20,
        "seed": 2,
    }
    body.update(overrides)
    return body


def lenet_job(**overrides: Any) -> dict[str, Any]:
    body = {
        "network": LENET_SPEC,
        "dataset": {"source": "random", "num_samples": 512, "num_classes": 10, "seed": 4},
        "criterion": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9},
        "batch_size": 16,
        "steps": 200,
        "seed": 3,
    }
    body.update(overrides)
    return body


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return response.json()["id"]


def wait_until(client: httpx.Client, job_id: str, predicate: Any, timeout: float = 120) -> dict[str, Any]:
    return wait_for(client, f"/v1/jobs/{job_id}", predicate, timeout)


def wait_for(client: httpx.Client, url: str, predicate: Any, timeout: float, pause: float = 0.05) -> dict[str, Any]:
    """GET ``url`` until ``predicate`` holds for its JSON; return that JSON."""
    deadline = time.monotonic() + timeout
    while True:
        doc = client.get(url).json()
        if predicate(doc):
            return doc
        assert time.monotonic() < deadline, f"timed out waiting on {url}: {doc}"
        time.sleep(pause)


def wait_final(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_until(client, job_id, lambda d: d["status"] in FINAL, timeout)


def sse(response: httpx.Response) -> Iterator[dict[str, str]]:
    """A text/event-stream body's events as ``{"id", "event", "data"}``, read by the protocol's one parser."""
    for event in parse_events(response.iter_lines()):
        yield {"id": event.id, "event": event.event, "data": event.data}


def gradserve_cli(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    """``gradserve ARGS...`` as a user runs it, as alice (exit code, stdout and stderr kept)."""
    env = {**os.environ, "GRADSERVE_URL": service.url, "GRADSERVE_API_KEY": API_KEYS["alice"]}
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
