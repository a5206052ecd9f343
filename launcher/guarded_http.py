"""uvicorn's h11 protocol with deadlines on reading a request and a cap on connections per client.

uvicorn times out only idle keep-alive connections: a client that sends half a request's headers, or a
body a byte at a time, holds its connection forever (19,900 such from one keyless client used up every
file descriptor of the API). Here a request's headers must arrive within GRADSERVE_HEADER_TIMEOUT_S of
the connection opening (or of the previous answer), its body within GRADSERVE_BODY_TIMEOUT_S of its
headers, and one client address holds at most GRADSERVE_MAX_CONNECTIONS_PER_CLIENT connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from models.settings import get_settings

log = logging.getLogger(__name__)


def _answer(status: int, reason: str, text: str) -> bytes:
    body = text.encode()
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
    return (head + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    # Open connections by client address, over every connection this process serves.
    open_by_client: ClassVar[Counter[str]] = Counter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()
        self.header_timeout_s = settings.header_timeout_s
        self.body_timeout_s = settings.body_timeout_s
        self.max_per_client = settings.max_connections_per_client
        self.deadline: asyncio.TimerHandle | None = None
        self.counted: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else ""
        if self.open_by_client[host] >= self.max_per_client:
            log.warning("refusing a connection from %s: it holds %d already", host, self.open_by_client[host])
            transport.write(
                _answer(
                    503,
                    "Service Unavailable",
                    f"too many connections from your address (GRADSERVE_MAX_CONNECTIONS_PER_CLIENT is "
                    f"{self.max_per_client}); close some and retry",
                )
            )
            transport.close()
            return
        self.open_by_client[host] += 1
        self.counted = host
        self._arm(self.header_timeout_s, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.counted is not None:
            self.open_by_client[self.counted] -= 1
            if self.open_by_client[self.counted] <= 0:
                del self.open_by_client[self.counted]
            self.counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        reading_body = self.conn.their_state is h11.SEND_BODY
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY and not reading_body:  # the headers are in: now the body's deadline
            self._arm(self.body_timeout_s, "body")
        elif state is h11.DONE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # the next request's headers are due (idle: keep-alive closes first)
            self._arm(self.header_timeout_s, "headers")

    def _arm(self, seconds: float, part: str) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._expire, part, seconds)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self, part: str, seconds: float) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        setting = "GRADSERVE_HEADER_TIMEOUT_S" if part == "headers" else "GRADSERVE_BODY_TIMEOUT_S"
        log.info("closing a connection from %s: its request's %s took over %s s", self.counted, part, seconds)
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            # No answer to this request has begun: say why it ends.
            text = f"the request's {part} did not arrive within {seconds:g} s ({setting})"
            self.transport.write(_answer(408, "Request Timeout", text))
        self.transport.close()
