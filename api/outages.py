"""Redis trouble as answers a client can act on: 503 with Retry-After while Redis is unreachable or
still loading, 507 while it is full. Never a 500: the service recovers by itself when Redis does.

``outage_response`` is also used by middleware, whose exceptions FastAPI's handlers never see.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import BusyLoadingError, OutOfMemoryError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Celery's producer raises kombu's OperationalError when it cannot reach the broker (our Redis).
OUTAGES = (RedisConnectionError, RedisTimeoutError, OperationalError)


def outage_response(exc: BaseException, retry_after_s: int) -> JSONResponse | None:
    """The answer for a Redis failure, or None when ``exc`` is something else."""
    if isinstance(exc, OutOfMemoryError):
        return JSONResponse(
            {
                "detail": "storage is full: the service's Redis reached its maxmemory and refuses writes; "
                "nothing was stored. Delete datasets or jobs you no longer need, or ask the operator to "
                "raise Redis's maxmemory"
            },
            status_code=507,
        )
    if isinstance(exc, BusyLoadingError):
        why = "the service's Redis is loading its data after a restart"
    elif isinstance(exc, OUTAGES):
        why = "the service's Redis is unreachable"
    else:
        return None
    return JSONResponse(
        {"detail": f"{why}; retry in {retry_after_s} s"},
        status_code=503,
        headers={"Retry-After": str(retry_after_s)},
    )


def install_outage_handlers(app: FastAPI, retry_after_s: int) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        response = outage_response(exc, retry_after_s)
        if response is None:  # pragma: no cover - only registered for the classes above
            raise exc
        return response

    for cls in (*OUTAGES, OutOfMemoryError):
        app.add_exception_handler(cls, handle)
