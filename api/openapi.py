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


# Creates whose body may name another object by id (network_id, a dataset's id, a template's network).
_REFERENCING = {"/v1/jobs", "/v1/sessions", "/v1/sweeps"}
# Creates that take a tenant's quota of concurrent jobs or live sessions.
_QUOTA = {"/v1/jobs", "/v1/jobs/{job_id}/fork", "/v1/sessions"}
_SESSION = "/v1/sessions/{session_id}"


def _errors(path: str, method: str) -> dict[int, str]:
    """Every error status the route can answer, beyond FastAPI's own."""
    out = {
        401: "Missing or unknown API key (when the service has keys)",
        422: "Invalid input, named by loc: a field, a shape, or a query parameter the route does not take",
        503: "Redis unreachable or still loading (with Retry-After); or no worker to serve the call",
    }
    if "{" in path or (method == "post" and path in _REFERENCING):
        out[404] = "Unknown id, or another tenant's"
    if method in {"post", "put", "delete"} or path.startswith(_SESSION):
        out[409] = "The current state forbids it, or a request with the same Idempotency-Key is still running"
    if method in {"post", "put", "delete"}:
        out[507] = "The service's Redis is full (maxmemory): nothing was stored"
    if method in {"post", "put"}:
        out[400] = "The body could not be read (a malformed multipart form)"
        out[413] = "The body, a decoded upload, or the tenant's storage quota is over its limit"
    if method == "post" and path in _QUOTA:
        out[429] = "The tenant's concurrent-jobs or live-sessions quota is taken (with Retry-After)"
    if path.startswith(_SESSION):
        out[504] = "No answer from the worker within GRADSERVE_CALL_TIMEOUT_S; retry with the same Idempotency-Key"
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
