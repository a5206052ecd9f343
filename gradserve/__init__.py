"""gradserve's Python client: ``Client``/``AsyncClient``, ``client.remote(net)`` (your own ``nn.Module``
driven on the service), ``client.jobs``, ``client.datasets`` and ``client.sweeps``. Needs only httpx,
torch and safetensors (rich draws ``watch``)."""

from gradserve.client import AsyncClient, Client
from gradserve.errors import APIError, ExportError, GradserveError, JobFailed, SpecError, SweepEnded
from gradserve.fx_spec import to_spec

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
