"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from api.deps import SettingsDep, StoreDep, tenant_for
from api.strict_json import StrictJsonRoute
from models.errors import Unauthorized
from models.tasks import LANE_QUEUES

router = APIRouter(tags=["operations"], route_class=StrictJsonRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The API process is up (says nothing of Redis or workers)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis unreachable or no worker alive"}})
async def readyz(request: Request, store: StoreDep, settings: SettingsDep) -> Any:
    """Ready to serve: Redis answers and at least one worker's heartbeat is fresh. The workers' names,
    PIDs and hosts, the leading sweeper's, and Redis's error, only for callers with an API key (or in
    single-user mode)."""
    try:
        tenant_for(request.headers.get("authorization", ""), settings)
        detailed = True
    except Unauthorized:
        detailed = False
    try:
        await store.redis.ping()
        workers = await store.live_workers()
        sweeper = await store.sweeper()
    except (RedisError, OSError) as exc:
        body: dict[str, Any] = {"status": "unavailable", "redis": f"unreachable: {exc}" if detailed else "unreachable"}
        # Like every other answer during a Redis outage (api.outages), this 503 says when to ask again.
        headers = {"Retry-After": str(settings.retry_after_s)}
        return JSONResponse({**body, "workers": []} if detailed else {**body, "workers_alive": 0}, 503, headers)
    body = {"status": "ready" if workers else "unavailable", "redis": "ok"}
    # Live workers per lane: jobs (training) and sessions (interactive calls).
    body["lanes"] = {lane: sum(1 for w in workers if lane in w.get("lanes", [])) for lane in LANE_QUEUES}
    if detailed:
        # Sweeps need a sweeper (`gradserve sweeper`); without one they wait, which is why it is shown.
        body.update(workers=workers, sweeper=sweeper, single_user=settings.single_user)
    else:
        body["workers_alive"] = len(workers)
    return JSONResponse(body, 200 if workers else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
