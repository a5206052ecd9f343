"""Slow clients hold no connection for long: half-sent headers or bodies are closed at their deadline, and
one address gets a bounded number of connections. A service of its own, with short deadlines."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import Service, running_service

pytestmark = pytest.mark.integration
HEADER_TIMEOUT_S = 1
BODY_TIMEOUT_S = 2
PER_CLIENT = 6
GIVE_UP_S = 30  # far past every deadline: a socket still open then is a failure, not a slow pass


@pytest.fixture(scope="module")
def slow_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "GRADSERVE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "GRADSERVE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "GRADSERVE_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT),
    }
    with running_service(Path(tmp_path_factory.mktemp("slow")), workers=1, session_workers=1, extra_env=env) as svc:
        yield svc


def _connect(service: Service) -> socket.socket:
    where = urlsplit(service.url)
    return socket.create_connection((where.hostname, where.port), timeout=GIVE_UP_S)


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_half_sent_headers_are_closed_at_the_header_deadline(slow_service: Service) -> None:
    with _connect(slow_service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gradserve\r\nX-Slow: ")
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"headers did not arrive within 1 s (GRADSERVE_HEADER_TIMEOUT_S)" in answer


def test_a_half_sent_body_is_closed_at_the_body_deadline(slow_service: Service) -> None:
    key = slow_service.keys["alice"]
    with _connect(slow_service) as sock:
        sock.sendall(
            b"POST /v1/networks HTTP/1.1\r\nHost: gradserve\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {key}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"input_shape": '
        )
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body did not arrive within 2 s (GRADSERVE_BODY_TIMEOUT_S)" in answer


def test_one_address_gets_a_bounded_number_of_connections(slow_service: Service) -> None:
    held = [_connect(slow_service) for _ in range(PER_CLIENT)]
    try:
        with _connect(slow_service) as extra:
            answer = _until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert f"GRADSERVE_MAX_CONNECTIONS_PER_CLIENT is {PER_CLIENT}".encode() in answer
    finally:
        for sock in held:
            sock.close()
    with httpx.Client(base_url=slow_service.url) as c:  # once they are gone, the address is served again
        assert c.get("/healthz").status_code == 200


def test_a_prompt_keep_alive_client_is_served_past_the_deadlines(slow_service: Service) -> None:
    with httpx.Client(base_url=slow_service.url) as c:
        first = c.get("/healthz")
        second = c.get("/healthz")
    assert first.status_code == second.status_code == 200
