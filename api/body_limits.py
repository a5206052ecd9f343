"""What a request must pass before its body is read: a valid API key, and its route's size cap.

One client without a key sent a 27 MB JSON network that the API parsed before answering 401, and 1.5
million layers held the event loop for 10 s. Now a request to ``/v1`` without a valid key is a 401
before a byte of its body is read, and a body over its route's cap is a 413 naming that cap, whether
it declares its length or comes chunked. A network spec is a small document, so the routes that take
one alone have a cap of their own (GRADSERVE_MAX_SPEC_BODY_BYTES); the rest carry tensors, datasets or
exported programs and have GRADSERVE_MAX_BODY_BYTES.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import tenant_for
from models.errors import PayloadTooLarge, Unauthorized
from models.settings import Settings

# (method, path): routes whose JSON body is a network spec and little else. A multipart POST /v1/networks
# is an exported program with its weights, under the general cap.
SPEC_ROUTES = frozenset({("POST", "/v1/networks"), ("POST", "/v1/sessions")})
AUTHENTICATED_PREFIX = "/v1/"
# A dataset sent as a raw body streams to the artifact store (api.routes.datasets): its own, larger cap.
DATASET_UPLOAD = ("POST", "/v1/datasets")


def body_cap(scope: Scope, settings: Settings) -> tuple[int, str]:
    """The most bytes this request's body may have, and the setting that says so."""
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
    if (scope["method"], scope["path"]) == DATASET_UPLOAD and not content_type.startswith(b"multipart/"):
        return settings.max_upload_bytes, "GRADSERVE_MAX_UPLOAD_BYTES"
    if (scope["method"], scope["path"]) in SPEC_ROUTES and not content_type.startswith(b"multipart/"):
        return settings.max_spec_body_bytes, "GRADSERVE_MAX_SPEC_BODY_BYTES"
    return settings.max_body_bytes, "GRADSERVE_MAX_BODY_BYTES"


class KeyFirst:
    """A ``/v1`` request without a valid API key is answered 401 before its body is read."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.settings.tenants_by_key and scope["path"].startswith(AUTHENTICATED_PREFIX):
            authorization = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            try:
                tenant_for(authorization, self.settings)
            except Unauthorized as exc:
                response = JSONResponse({"detail": exc.msg}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Refuse a request body over its route's cap with 413 before it is buffered, chunked or not."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = body_cap(scope, self.settings)
        message = f"request body exceeds {limit:,} bytes ({setting})"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(message, scope, receive, send)
            return
        seen = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, over
            received = await receive()
            if received["type"] == "http.request":
                seen += len(received.get("body", b""))
                if seen > limit:
                    over = True
                    raise PayloadTooLarge(message)
            return received

        async def guarded_send(out: Message) -> None:
            # FastAPI turns an exception raised while it reads the body into its own 400 ("error parsing
            # the body"); whatever the app answers once the limit was passed is replaced by the 413.
            nonlocal started
            if over:
                if out["type"] == "http.response.start" and not started:
                    started = True
                    await _refuse(message, scope, receive, send)
                return
            started = started or out["type"] == "http.response.start"
            await send(out)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except PayloadTooLarge:
            if started:
                raise
            started = True
            await _refuse(message, scope, receive, send)


async def _refuse(message: str, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
