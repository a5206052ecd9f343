"""gradserve's Python client: ``Client``/``AsyncClient``, ``client.remote(net)`` (your own ``nn.Module``
driven on the service), ``client.jobs`` and ``client.datasets``. Needs only httpx, torch and safetensors."""

from gradserve.client import AsyncClient, Client
from gradserve.errors import APIError, GradserveError, JobFailed, SpecError
from gradserve.fx_spec import to_spec

__all__ = ["APIError", "AsyncClient", "Client", "GradserveError", "JobFailed", "SpecError", "to_spec"]
