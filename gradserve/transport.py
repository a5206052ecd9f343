"""The HTTP half of the client: one connection to the service, errors raised as ``APIError``, and the
resends that are safe. ``Client`` adds the resources (``client.jobs``, ...) on top; the resources take a
``Transport``, so they need nothing of the ``Client`` that holds them.

The base URL and API key come from the arguments, else ``GRADSERVE_URL`` and ``GRADSERVE_API_KEY``.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Self

import httpx

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


class Transport:
    """``Transport(base_url, api_key)``: ``request`` and ``session_call`` over one ``httpx.Client``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url, headers = _settings(base_url, api_key)
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)

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

    def upload_exported(self, upload: Any) -> dict[str, Any]:
        """``POST /v1/networks/exported`` with an ``ExportedUpload``'s parts; answers the stored network."""
        network: dict[str, Any] = self.request("POST", "/v1/networks/exported", files=upload.files()).json()
        return network

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTransport:
    """The async twin of ``Transport``: ``request`` over one ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url, headers = _settings(base_url, api_key)
        self.http = httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, transport=transport)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return check(await self.http.request(method, path, **kwargs))
        except DROPPED:
            if not _may_resend(method, kwargs):
                raise
        return check(await self.http.request(method, path, **kwargs))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
