"""A bug in a handler is a 500 and nothing more: the client's keep-alive connection serves its next request.

The app is ``create_app``'s, with one extra route that fails, served by a real uvicorn in a thread: uvicorn
is what closed the connection after Starlette re-raised the exception it had answered."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from api.main import create_app
from launcher.embedded_redis import free_port
from models.settings import Settings


class Boom(Exception):
    pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))

    async def boom() -> None:
        raise Boom("a bug")

    app.add_api_route("/boom", boom)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _local_port(response: httpx.Response) -> int:
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


def test_the_connection_outlives_an_unexpected_error(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        failed = client.get("/boom")
        assert failed.status_code == 500
        after = client.get("/healthz")
        assert after.status_code == 200
        assert _local_port(after) == _local_port(failed)  # the same connection, not a fresh one
        assert failed.json() == {"detail": "internal error; it was logged"}
