"""Map the error tree (models.errors) and Starlette's own errors to FastAPI's ``{"detail": ...}`` responses."""

from __future__ import annotations

import math
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from models.errors import GradserveError

_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    429: {"Retry-After": "5"},
    503: {"Retry-After": "1"},
    504: {"Retry-After": "5"},
}


async def _gradserve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GradserveError)
    headers = dict(_HEADERS.get(exc.status, {}))
    if "retry_after" in exc.extra:  # the error knows better how soon a retry can succeed
        headers["Retry-After"] = str(math.ceil(exc.extra["retry_after"]))
    return JSONResponse({"detail": exc.detail()}, status_code=exc.status, headers=headers or None)


# FastAPI echoes each invalid value as ``input``; past this size (a big tensor, a whole spec) it is dropped.
MAX_ECHO_BYTES = 1000


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, but always valid JSON: non-finite floats are echoed as strings and oversized or
    unencodable echoes are left out, where FastAPI's own handler failed to render them (a 500)."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        err = dict(err)
        echo = _echo(err.pop("input", None))
        err = {k: _finite(v) for k, v in jsonable_encoder(err).items()}
        if echo is not _NO_ECHO:
            err["input"] = echo
        errors.append(err)
    return JSONResponse({"detail": errors}, status_code=422)


_NO_ECHO = object()


def _echo(value: Any) -> Any:
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, (list, dict, str)) and len(value) > MAX_ECHO_BYTES:
        return _NO_ECHO  # too long to echo whatever it holds; serializing 1.5 million layers took seconds
    try:  # orjson: no Python recursion on deep input, and it refuses what JSON cannot hold
        text = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return _NO_ECHO
    return orjson.loads(text) if len(text) <= MAX_ECHO_BYTES else _NO_ECHO


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's answer, but a 405's ``Allow`` lists every route of the path: Starlette named only the
    methods of the first route whose path matched (``OPTIONS /v1/datasets`` said ``POST`` alone)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        # Asked of the routes method by method: FastAPI's included routers answer matches(), not methods.
        methods = [
            method
            for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.routes)
        ]
        if methods:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(methods)}
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GradserveError, _gradserve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
