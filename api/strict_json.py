"""Request bodies are parsed as strict JSON (RFC 8259) by orjson, on every route, and a query parameter
the route does not take is a 422 (a misspelt ``?stpe=100``, ignored, would answer something else).

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e400`` (as inf), which are not JSON and cannot be
echoed back in an error response. orjson refuses them with a clear 422 ``json_invalid``, caps nesting
depth, and is ~10x faster on tensor bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

# Bodies above this are parsed in a worker thread, off the event loop: with a 26 MB job body, /healthz
# waited at most 0.6 s instead of 1.3 s (bench/one_client.py; orjson holds the GIL while it parses).
THREAD_PARSE_BYTES = 256 * 1024


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = (
                await run_in_threadpool(orjson.loads, body) if len(body) > THREAD_PARSE_BYTES else orjson.loads(body)
            )
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        allowed = _query_names(self.dependant)
        takes = ", ".join(sorted(allowed)) or "none"

        async def route(request: Request) -> Response:
            if request.scope.get("query_string"):
                unknown = [k for k in request.query_params if k not in allowed]
                if unknown:
                    raise RequestValidationError(
                        [
                            {
                                "type": "extra_forbidden",
                                "loc": ("query", k),
                                "msg": f"unknown query parameter '{k}'; this route takes: {takes}",
                                "input": request.query_params[k],
                            }
                            for k in unknown
                        ]
                    )
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)
