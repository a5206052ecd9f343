"""Redis trouble as answers a client can act on: 503 with Retry-After while Redis is unreachable or
still loading, 507 while it is full. Never a 500: the service recovers by itself when Redis does.

``outage_response`` is also used by middleware, whose exceptions FastAPI's handlers never see.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import BusyLoadingError, MaxConnectionsError, OutOfMemoryError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

# Celery's producer raises kombu's OperationalError when it cannot reach the broker (our Redis).
OUTAGES = (RedisConnectionError, RedisTimeoutError, OperationalError)


def outage_response(exc: BaseException, retry_after_s: int) -> JSONResponse | None:
    """The answer for a Redis failure, or None when ``exc`` is something else."""
    # Inside a Lua script the same refusal arrives as a script error that quotes it.
    if isinstance(exc, OutOfMemoryError) or (isinstance(exc, ResponseError) and "OOM command not allowed" in str(exc)):
        return JSONResponse(
            {
                "detail": "storage is full: the service's Redis reached its maxmemory and refuses writes; "
                "nothing was stored. Delete datasets or jobs you no longer need, or ask the operator to "
                "raise Redis's maxmemory"
            },
            status_code=507,
        )
    if isinstance(exc, MaxConnectionsError):
        why = "too many requests are waiting on the service's Redis (GRADSERVE_REDIS_MAX_CONNECTIONS)"
    elif isinstance(exc, BusyLoadingError):
        why = "the service's Redis is loading its data after a restart"
    elif isinstance(exc, OUTAGES):
        why = "the service's Redis is unreachable"
    else:
        return None
    log.warning("answering 503: %s: %s", type(exc).__name__, exc)
    return JSONResponse(
        {"detail": f"{why}; retry in {retry_after_s} s"},
        status_code=503,
        headers={"Retry-After": str(retry_after_s)},
    )


def install_outage_handlers(app: FastAPI, retry_after_s: int) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        response = outage_response(exc, retry_after_s)
        if response is None:  # another Redis error: a bug, left to the 500 handler and its log
            raise exc
        return response

    for cls in (*OUTAGES, ResponseError):
        app.add_exception_handler(cls, handle)
