"""``Client`` and ``AsyncClient``: one HTTP connection to the service, errors raised as ``APIError``.

The base URL and API key come from the arguments, else ``GRADSERVE_URL`` and ``GRADSERVE_API_KEY``.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import httpx
import torch
from torch import nn

from gradserve.errors import APIError

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT_S = 120.0
SESSION_RETRIES = 5


# A kept-alive connection can be closed by the server (or a proxy) just as a request goes out on it:
# no answer comes, and nothing says whether the request was applied. Requests that may be applied twice
# without harm are sent once more on a fresh connection; a POST only when it carries an Idempotency-Key.
DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _may_resend(method: str, kwargs: dict[str, Any]) -> bool:
    headers = {k.lower() for k in kwargs.get("headers") or {}}
    return method.upper() in IDEMPOTENT_METHODS or "idempotency-key" in headers


def _settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    url = base_url or os.environ.get("GRADSERVE_URL") or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get("GRADSERVE_API_KEY")
    return url, ({"Authorization": f"Bearer {key}"} if key else {})


def check(response: httpx.Response) -> httpx.Response:
    """The response, or an ``APIError`` carrying the service's ``detail``."""
    if response.status_code < 400:
        return response
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise APIError(response.status_code, detail, response.request.method, str(response.request.url.path))


class Client:
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
        from gradserve.jobs import Datasets, Jobs, Sessions
        from gradserve.sweeps import Sweeps

        url, headers = _settings(base_url, api_key)
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)
        self.jobs = Jobs(self)
        self.datasets = Datasets(self)
        self.sessions = Sessions(self)
        self.sweeps = Sweeps(self)

    @property
    def base_url(self) -> str:
        return str(self.http.base_url)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return check(self.http.request(method, path, **kwargs))
        except DROPPED:
            if not _may_resend(method, kwargs):
                raise
        return check(self.http.request(method, path, **kwargs))

    def session_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A session call under one ``Idempotency-Key``, retried after ``Retry-After`` while the service
        says busy (503) or timed out (504), or the answer was lost: the service applies it at most once."""
        headers = {**kwargs.pop("headers", {}), "Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(SESSION_RETRIES):
            try:
                response = self.http.request(method, path, headers=headers, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if attempt == SESSION_RETRIES - 1:
                    raise
                time.sleep(1.0)
                continue
            if response.status_code not in (503, 504) or attempt == SESSION_RETRIES - 1:
                return check(response)
            time.sleep(min(float(response.headers.get("Retry-After", "1")), 30.0))
        raise AssertionError("unreachable")

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
        from gradserve.remote import RemoteNet

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

    def upload_exported(self, upload: Any) -> dict[str, Any]:
        """``POST /v1/networks/exported`` with an ``ExportedUpload``'s parts; answers the stored network."""
        network: dict[str, Any] = self.request("POST", "/v1/networks/exported", files=upload.files()).json()
        return network

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The async twin of ``Client`` for jobs, datasets and sessions (``await client.jobs.submit(...)``)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        from gradserve.jobs_async import AsyncDatasets, AsyncJobs, AsyncSessions

        url, headers = _settings(base_url, api_key)
        self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, transport=transport)
        self.jobs = AsyncJobs(self)
        self.datasets = AsyncDatasets(self)
        self.sessions = AsyncSessions(self)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return check(await self.http.request(method, path, **kwargs))
        except DROPPED:
            if not _may_resend(method, kwargs):
                raise
        return check(await self.http.request(method, path, **kwargs))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def optimizer_spec(
    optimizer: type[torch.optim.Optimizer] | str | dict[str, Any] | None, args: dict[str, Any]
) -> dict[str, Any] | None:
    """``torch.optim.SGD`` + ``{"lr": 0.01}`` (or ``"SGD"``, or a ready dict) as our optimizer spec."""
    if optimizer is None:
        if args:
            raise TypeError(f"optimizer arguments {sorted(args)} given without an optimizer")
        return None
    if isinstance(optimizer, dict):
        return {**optimizer, **args}
    name = optimizer if isinstance(optimizer, str) else optimizer.__name__
    return {"type": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}}
