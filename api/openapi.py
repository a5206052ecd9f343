"""The OpenAPI document, completed with the error answers every route shares (FastAPI lists only 422)
and with the Prometheus metrics route, whose answer is text, not JSON."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "properties": {"detail": {"title": "Detail", "anyOf": [{"type": "string"}, {"type": "array", "items": {}}]}},
    "required": ["detail"],
}
METRICS_PATH = "/metrics"


def _errors(path: str, method: str) -> dict[int, str]:
    out = {503: "Redis unreachable or still loading (with Retry-After); or no worker to serve the call"}
    if "{" in path:
        out[404] = "Unknown id, or another tenant's"
    if method in {"post", "put", "delete"}:
        out[409] = "The current state forbids it, or a request with the same Idempotency-Key is still running"
        out[507] = "The service's Redis is full (maxmemory): nothing was stored"
    if method in {"post", "put"}:
        out[413] = "The body, a decoded upload, or the tenant's storage quota is over its limit"
    if path == "/v1/jobs" and method == "post":
        out[429] = "The tenant's concurrent-jobs quota is taken (with Retry-After)"
    return out


def _idempotency_key(path: str) -> dict[str, Any]:
    session = path.startswith("/v1/sessions")
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "maxLength": 128, "pattern": r"^[A-Za-z0-9._:-]+$"}
        if session
        else {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "A retry carrying the same key gets the first answer instead of doing the work twice "
        "(e.g. a UUID per logical request).",
    }


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                if not path.startswith("/v1/"):
                    continue
                for status, text in _errors(path, method).items():
                    operation["responses"].setdefault(str(status), {"description": text, "content": _ERROR})
                if method == "post":  # read by api.idempotency (or, for session calls, by the route itself)
                    operation.setdefault("parameters", []).append(_idempotency_key(path))
        schema["paths"][METRICS_PATH] = {
            "get": {
                "tags": ["operations"],
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
