"""gradserve's Python client: ``Client``/``AsyncClient``, ``client.remote(net)`` (your own ``nn.Module``
driven on the service), ``client.jobs``, ``client.datasets`` and ``client.sweeps``. Needs only httpx,
torch and safetensors (rich draws ``watch``).

The client is imported on first use, so ``gradserve.protocol`` (what the server shares with the client,
torch-free) can be imported without it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gradserve.errors import APIError, ExportError, GradserveError, JobFailed, SpecError, SweepEnded

if TYPE_CHECKING:
    from gradserve.client import AsyncClient, Client
    from gradserve.fx_spec import to_spec

_LAZY = {"AsyncClient": "gradserve.client", "Client": "gradserve.client", "to_spec": "gradserve.fx_spec"}

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "ExportError",
    "GradserveError",
    "JobFailed",
    "SpecError",
    "SweepEnded",
    "to_spec",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gradserve' has no attribute '{name}'")
