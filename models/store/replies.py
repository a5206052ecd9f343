"""Typed views of Redis replies.

redis-py annotates every reply as ``bytes | str`` because ``decode_responses`` is a runtime flag. gradserve
never sets it, so replies are bytes; these narrow a reply once, where it is read, instead of a cast at
each use. A ``str`` (a client made with the flag) is encoded rather than refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from redis.typing import XReadResponse

Reply = bytes | str
Entry = tuple[str, dict[bytes, bytes]]


def as_bytes(value: Reply) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def opt_bytes(value: Reply | None) -> bytes | None:
    return None if value is None else as_bytes(value)


def required(value: Reply | None, what: str) -> bytes:
    """A field every record of its kind is written with: its absence means the record is corrupt."""
    if value is None:
        raise ValueError(f"{what} is missing")
    return as_bytes(value)


def text(value: Reply) -> str:
    return value.decode() if isinstance(value, bytes) else value


def opt_text(value: Reply | None) -> str | None:
    return None if value is None else text(value)


def members(raw: Iterable[object]) -> list[str]:
    """A ZRANGE-family reply read without scores (redis-py's annotation also allows the scored shape)."""
    return [text(m) for m in raw if isinstance(m, bytes | str)]


def byte_fields(raw: Mapping[Reply, Reply]) -> dict[bytes, bytes]:
    """A hash (HGETALL) or stream entry's fields, keys and values as bytes."""
    return {as_bytes(k): as_bytes(v) for k, v in raw.items()}


def stream_entries(raw: Iterable[tuple[Reply | None, Mapping[Reply, Reply] | None]] | None) -> list[Entry]:
    """XRANGE / XREVRANGE / one stream of XREAD: (id, fields) pairs. redis-py allows a missing id or
    fields (a trimmed entry in XAUTOCLAIM); those are dropped, as plain reads never return them."""
    return [(text(i), byte_fields(f)) for i, f in raw or [] if i is not None and f is not None]


def first_stream(raw: XReadResponse) -> list[Entry]:
    """The entries of the one stream an XREAD named: RESP2's ``[[key, entries]]``, or RESP3's ``{key: entries}``."""
    if not raw:
        return []
    entries: Any = next(iter(raw.values())) if isinstance(raw, dict) else raw[0][1]
    return stream_entries(entries)
