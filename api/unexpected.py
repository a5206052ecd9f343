"""A bug in a handler is one 500, logged, and the connection stays usable.

Starlette's outermost layer answers an unexpected exception with a 500 and then raises it again for
the server to log; uvicorn, seeing an exception after the answer went out, closes the connection, and
the client's next request on that keep-alive connection is reset. This layer, the outermost one the
app can add, logs the exception and answers (or finishes) instead, raising only when an answer was
already half sent, since then closing is the only honest end.
"""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class UnexpectedErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = finished = False

        async def tracking_send(message: Message) -> None:
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unexpected error in %s %s", scope["method"], scope["path"])
            if started and not finished:
                raise
            if not started:
                await JSONResponse({"detail": "internal error; it was logged"}, status_code=500)(scope, receive, send)
