"""Server-sent events as the service writes them (``GET /v1/jobs/{id}/events``) and as clients read them.

An event is ``id: <stream id>``, ``event: metric|state`` and one ``data:`` line of JSON, then a blank line.
Lines starting with ``:`` are comments (keep-alives); ``retry:`` tells a browser how long to wait before it
reconnects. The dashboard's reader (``api/static/ui/app.js``) is the same grammar in JavaScript.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

KEEPALIVE = b": keep-alive\n\n"
RETRY_MS = 1000


@dataclass(frozen=True)
class Event:
    id: str
    event: str
    data: str  # the raw JSON text, as it came

    def json(self) -> Any:
        return json.loads(self.data)


def encode_event(event_id: str, event: str, data: str) -> bytes:
    """One event; ``data`` is JSON text on one line (the service writes it with ``json.dumps``)."""
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


def retry_field(ms: int = RETRY_MS) -> bytes:
    return f"retry: {ms}\n\n".encode()


def parse_events(lines: Iterable[str]) -> Iterator[Event]:
    """The events in a stream's lines (``httpx.Response.iter_lines()``); comments and ``retry`` are skipped.
    Several ``data:`` lines join with newlines; an event without ``event:`` is a ``message``, as in browsers."""
    event_id, event, data = "", "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield Event(event_id, event, "\n".join(data))
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            event_id = value
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)
