"""A lean HTTP/1.1 keep-alive connection for load generators: on a 2-core box the load generator shares
the CPU with the service it measures, and httpx spends ~5 ms of CPU per request there (a whole core at
~150 requests/s), so a benchmark driven by it measures httpx as much as the service. This one only
writes a request and reads a ``Content-Length`` answer, as wrk or hey would.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class Dropped(ConnectionError):
    """The connection ended before a whole answer came back."""


class KeepAlive:
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{self.host}:{self.port}", **headers}.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        # Requests that got no answer on a kept connection (the server closed it), resent or not:
        # each is a transport error a client without a retry would have seen.
        self.dropped = 0

    async def request(
        self, method: str, path: str, body: bytes, content_type: str
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body); reconnects once when the kept connection was closed."""
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            length = f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            head = f"{method} {path} HTTP/1.1\r\n{self.fixed}{length}"
            try:
                self.writer.write(head.encode("latin-1") + body)
                return await self._answer()
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self.dropped += 1
                await self.close()
                if attempt == 1:
                    raise Dropped(str(exc)) from exc
        raise AssertionError("unreachable")

    async def _answer(self) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise Dropped(f"an answer without Content-Length ({headers.get('transfer-encoding', 'no length')})")
        body = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.reader = None
