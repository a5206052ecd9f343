"""Session routes that take their tensors as a safetensors body as well as JSON.

A ``Content-Type: application/octet-stream`` body is read as ``models.wire.session.read_binary_body``
reads it; its tensors are set aside on the request (``binary_tensors`` gives them back) and the route
then sees an ordinary JSON body made of the ``args`` metadata, with a zero-size placeholder for each
tensor. So both forms go through one pydantic model: the same validation, the same error bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, get_args

import orjson
import torch
from fastapi import Request, Response
from pydantic import BaseModel
from starlette.types import Message

from api.strict_json import StrictJsonRoute
from models.wire.session import OCTET, TENSOR_ARGS, read_binary_body

_SCOPE_KEY = "gradserve.tensors"
# A valid tensor in every JSON form the models take; the route swaps in the real one.
_PLACEHOLDER = {"zeros": [0]}

# For a route's ``openapi_extra`` and ``responses``: the binary forms next to the JSON ones.
BINARY_REQUEST = {
    "requestBody": {
        "content": {
            OCTET: {
                "schema": {"type": "string", "format": "binary"},
                "example": "safetensors: tensors under their argument names, the rest as JSON in metadata 'args'",
            }
        }
    }
}
BINARY_ANSWER = {OCTET: {"schema": {"type": "string", "format": "binary"}}}


def wants_binary(request: Request) -> bool:
    """``Accept: application/octet-stream``: the answer as safetensors, its other fields in metadata ``json``."""
    return OCTET in request.headers.get("accept", "")


def binary_tensors(request: Request) -> dict[str, torch.Tensor]:
    """The tensors of a binary body (empty for a JSON one)."""
    tensors: dict[str, torch.Tensor] = request.scope.get(_SCOPE_KEY, {})
    return tensors


class BinaryBodyRoute(StrictJsonRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if self.body_field is not None and request.headers.get("content-type", "").startswith(OCTET):
                request = await self._as_json(request)
            return await handler(request)

        return route

    def _tensor_names(self) -> tuple[str, ...]:
        assert self.body_field is not None
        annotation = self.body_field.field_info.annotation
        models = [a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)]
        return tuple(name for name in TENSOR_ARGS if any(name in m.model_fields for m in models))

    async def _as_json(self, request: Request) -> Request:
        tensors, args = read_binary_body(await request.body(), self._tensor_names())
        named = {k.removeprefix("inputs."): _PLACEHOLDER for k in tensors if k.startswith("inputs.")}
        plain = dict.fromkeys((k for k in tensors if not k.startswith("inputs.")), _PLACEHOLDER)
        body = orjson.dumps({**args, **plain, **({"inputs": named} if named else {})})
        headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
        scope = {**request.scope, "headers": [*headers, (b"content-type", b"application/json")], _SCOPE_KEY: tensors}

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        return Request(scope, receive)
