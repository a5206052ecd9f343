"""How the API and the workers connect to Redis, so both ride out the same outages the same way."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from models.settings import Settings

# Seconds a read may take beyond the longest blocking wait the service makes (a session call's BLPOP).
READ_MARGIN_S = 15.0


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url`` (sync or asyncio).

    redis-py already retries a command on a fresh connection after a connection error (three times,
    with backoff); the health check adds a PING before reusing a connection idle past the interval,
    which catches the ones a Redis restart left half-open. The connect timeout makes an unreachable
    host fail fast (a 503) instead of hanging the request. The read timeout must outlast the longest
    wait: redis-py 8 defaults it to 5 s, which cut off a session call's BLPOP for its answer after
    5 s (a 500 while the worker went on to apply the call); with its own margin it still ends a
    read from a Redis that hangs.
    """
    return {
        "health_check_interval": settings.redis_health_check_interval_s,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.call_timeout_s + READ_MARGIN_S,
        "socket_keepalive": True,
        "max_connections": settings.redis_max_connections,
    }


def redacted(url: str) -> str:
    """``url`` with its password (and a user name beside it) replaced by ``***``, for logs."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    creds = f"{user}:***" if parts.password is not None else "***"
    return urlunsplit(parts._replace(netloc=f"{creds}@{host}"))
