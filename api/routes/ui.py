"""The dashboard at ``/ui/`` and Swagger UI at ``/docs``, every asset served from ``api/static`` (no CDN).

The pages hold no tenant's data and need no key (the dashboard's page carries the protocol's states). Their
scripts call the ``/v1`` API with the key the user types once (kept in the browser's sessionStorage), so a
tenant sees exactly what its key sees.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from api.docs_examples import enrich
from gradserve.protocol.states import public_states

STATIC = Path(__file__).resolve().parent.parent / "static"
UPLOT = "uplot-1.6.32"
SWAGGER_UI = "swagger-ui-5.35.0"
_NO_CACHE = {"Cache-Control": "no-cache"}
# The dashboard runs only its own files: no inline or foreign script (an injected one could read the API
# key from sessionStorage), no framing (clickjacking its cancel buttons). uPlot sets inline styles.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


@router.get("/ui")
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/")
async def ui_index() -> HTMLResponse:
    """The dashboard's single page; it routes by the URL's #fragment."""
    return HTMLResponse(_index(), headers={**_NO_CACHE, **PAGE_HEADERS})


@functools.cache
def _index() -> str:
    """The page with the protocol's states written in (as ``GET /protocol`` answers them): the script reads
    them from there, so it holds no copy and waits for no request before it draws."""
    states = json.dumps({"states": public_states()}).replace("<", "\\u003c")  # nothing in it may end the block
    return (STATIC / "ui" / "index.html").read_text().replace("<!-- PROTOCOL -->", states)


def install(app: FastAPI) -> None:
    """Serve the dashboard, its assets and an offline ``/docs`` (create the app with ``docs_url=None``)."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    vendor = f"/ui/static/vendor/{SWAGGER_UI}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
            swagger_css_url=f"{vendor}/swagger-ui.css",
            swagger_favicon_url="/ui/static/ui/favicon.svg",
            swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": False},
        )
        page.headers["X-Frame-Options"] = "DENY"  # Swagger UI's page has inline scripts: no CSP here
        return page

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = enrich(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
