"""Request bodies are parsed as strict JSON (RFC 8259) by orjson, on every route.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e400`` (as inf): such values slipped into
specs and tensors and then broke the error response that echoed them (a 500). orjson refuses them
with a clear 422 ``json_invalid``, caps nesting depth, and is ~10x faster on tensor bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route
