"""How the API and the workers connect to Redis, so both ride out the same outages the same way."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from models.settings import Settings

# Seconds a read may take beyond the longest blocking wait the service makes (a session call's BLPOP).
READ_MARGIN_S = 15.0


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url`` (sync or asyncio).

    A client made by ``from_url`` does not retry a failed command (its connections get
    ``Retry(NoBackoff(), 0)``; only ``Redis(...)`` gets redis-py's default retries), and that is kept:
    a command whose reply was lost may have been applied (an XADD of a step's records, a session
    call's enqueue, a quota booking), and a blind resend would apply it twice. What makes a Redis
    restart survivable instead is the pool's check of each connection it hands out: one whose server
    closed it (every pooled connection, once Redis restarted) is reconnected before anything is sent
    on it. See ``_pool_checks_connections`` for why that check needs an option here.

    The health check adds a PING before reusing a connection idle past the interval (without a retry
    a failed PING fails that command: a 503 with Retry-After, never a 500). The connect timeout makes
    an unreachable host fail fast (a 503) instead of hanging the request. The read timeout must
    outlast the longest wait: redis-py 8 defaults it to 5 s, which cut off a session call's BLPOP for
    its answer after 5 s (a 500 while the worker went on to apply the call); with its own margin it
    still ends a read from a Redis that hangs.
    """
    return {
        "health_check_interval": settings.redis_health_check_interval_s,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.call_timeout_s + READ_MARGIN_S,
        "socket_keepalive": True,
        "max_connections": settings.redis_max_connections,
        **_pool_checks_connections(),
    }


def _pool_checks_connections() -> dict[str, Any]:
    """Options that keep redis-py's pool checking a pooled connection before it hands it out.

    redis-py's pools reconnect a connection that has unread data or whose server closed it, but
    redis-py 8 skips that check while "maintenance notifications" are enabled, and their default,
    ``"auto"``, counts as enabled even on RESP2, where they never arrive. Without the check, after a
    Redis restart every pooled connection still points at the dead server and fails the first command
    sent on it ("Connection closed by server"): one 503 per pooled connection, in the API and the
    workers. The notifications are for managed clusters that move shards (on
    RESP3), which the service does not use; turning them off brings the check back.
    """
    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:  # an older redis-py: no such notifications, and its pools always check
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def redacted(url: str) -> str:
    """``url`` with every password in it replaced by ``***``, for logs.

    redis-py reads a password from the user part (``redis://user:pw@host``) and from the query
    (``?password=pw``, the only place a ``unix://`` socket URL can carry one); both are masked, and a
    user part without a password too, since a password put there by mistake would otherwise show.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user_part, host = netloc.rsplit("@", 1)
        user, has_password, _ = user_part.partition(":")
        netloc = f"{user}:***@{host}" if has_password else f"***@{host}"
    query = "&".join(_redacted_pair(pair) for pair in parts.query.split("&")) if parts.query else ""
    if not parts.netloc and url.startswith(f"{parts.scheme}://"):  # unix:///path: urlunsplit would drop the //
        return f"{parts.scheme}://{parts.path}" + (f"?{query}" if query else "") + url[len(url.split("#")[0]) :]
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _redacted_pair(pair: str) -> str:
    key, has_value, _ = pair.partition("=")
    if has_value and unquote_plus(key).strip().lower() == "password":
        return f"{key}=***"
    return pair
