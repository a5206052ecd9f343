"""The client sends an idempotent request again when its kept-alive connection was closed under it
without an answer, and never a POST that could apply twice."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

import gradserve

BODY = b'{"ok": true}'
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


@contextmanager
def drops_first_request() -> Iterator[tuple[str, list[bytes]]]:
    """A server that reads the first request and closes its connection without answering (as a server
    closing an idle keep-alive connection does when the request crosses its close), then answers."""
    server = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(65536)
                if not request:
                    continue
                seen.append(request.split(b"\r\n", 1)[0])
                if len(seen) > 1:
                    conn.sendall(ANSWER)
                    conn.recv(65536)  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", seen
    finally:
        server.close()


def test_a_get_whose_connection_closed_unanswered_is_sent_again() -> None:
    with drops_first_request() as (url, seen), gradserve.Client(url) as client:
        assert client.request("GET", "/v1/jobs").json() == {"ok": True}
    assert seen == [b"GET /v1/jobs HTTP/1.1"] * 2


def test_a_post_with_an_idempotency_key_is_sent_again_and_one_without_is_not() -> None:
    with drops_first_request() as (url, seen), gradserve.Client(url) as client:
        assert client.request("POST", "/v1/jobs", json={}, headers={"Idempotency-Key": "k1"}).status_code == 200
    assert len(seen) == 2
    with drops_first_request() as (url, seen), gradserve.Client(url) as client, pytest.raises(httpx.TransportError):
        client.request("POST", "/v1/jobs", json={})
    assert len(seen) == 1


def test_the_async_client_sends_a_get_again_too() -> None:
    async def run(url: str) -> object:
        async with gradserve.AsyncClient(url) as client:
            return (await client.request("GET", "/v1/jobs")).json()

    with drops_first_request() as (url, seen):
        assert asyncio.run(run(url)) == {"ok": True}
    assert len(seen) == 2
