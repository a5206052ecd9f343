"""``Client`` and ``AsyncClient``: a connection to the service (``gradserve.transport``) with its resources:
``client.jobs``, ``client.datasets``, ``client.sessions``, ``client.sweeps`` and ``client.remote(net)``.

The base URL and API key come from the arguments, else ``GRADSERVE_URL`` and ``GRADSERVE_API_KEY``.
"""

from __future__ import annotations

from typing import Any

import httpx
import torch
from torch import nn

from gradserve.fx_spec import optimizer_spec
from gradserve.jobs import Datasets, Jobs, Sessions
from gradserve.jobs_async import AsyncDatasets, AsyncJobs, AsyncSessions
from gradserve.remote import RemoteNet
from gradserve.sweeps import Sweeps
from gradserve.transport import TIMEOUT_S, AsyncTransport, Transport


class Client(Transport):
    """``Client(base_url="http://127.0.0.1:8000", api_key=None)``; ``client.jobs``, ``client.datasets``,
    ``client.sessions``, ``client.sweeps``, ``client.remote(net)``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, transport=transport)
        self.jobs = Jobs(self)
        self.datasets = Datasets(self)
        self.sessions = Sessions(self)
        self.sweeps = Sweeps(self)

    def remote(
        self,
        net: nn.Module | dict[str, Any],
        optimizer: type[torch.optim.Optimizer] | str | dict[str, Any] | None = None,
        *,
        input_shape: list[int] | tuple[int, ...] | None = None,
        seed: int = 0,
        device: str = "cpu",
        format: str = "auto",
        output: str | int | None = None,
        **optimizer_args: Any,
    ) -> Any:
        """A session holding ``net`` (its current weights): the tutorial's lines run on it remotely.

        ``optimizer=torch.optim.SGD, lr=0.01`` gives the session ``rnet.step()``. A module keeps its own weights,
        and the session's generator starts as ``torch.manual_seed(seed)`` leaves it (dropout then draws the masks
        a local loop draws after that call); a spec dict is built under ``torch.manual_seed(seed)``. Without
        ``input_shape`` the session is created at the first call, from the input's shape.
        A module the readable catalogue spec cannot express (nested blocks, transformers, an LSTM read
        at ``out[:, -1]``) goes as a ``torch.export`` program, exported at that first call on its inputs;
        ``format="export"`` forces that path, ``format="spec"`` refuses it. ``output`` names the tensor
        the loss reads when the model returns several (``"logits"`` by default, when there is one).
        """
        return RemoteNet(
            self,
            net,
            optimizer_spec(optimizer, optimizer_args),
            input_shape=input_shape,
            seed=seed,
            device=device,
            format=format,
            output=output,
        )


class AsyncClient(AsyncTransport):
    """The async twin of ``Client`` for jobs, datasets and sessions (``await client.jobs.submit(...)``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout=timeout, transport=transport)
        self.jobs = AsyncJobs(self)
        self.datasets = AsyncDatasets(self)
        self.sessions = AsyncSessions(self)
