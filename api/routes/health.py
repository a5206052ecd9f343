"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from api.deps import SettingsDep, StoreDep
from api.strict_json import StrictJsonRoute
from models.tasks import LANE_QUEUES

router = APIRouter(tags=["operations"], route_class=StrictJsonRoute)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The API process is up (says nothing of Redis or workers)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis unreachable or no worker alive"}})
async def readyz(store: StoreDep, settings: SettingsDep) -> Any:
    """Ready to serve: Redis answers and at least one worker's heartbeat is fresh."""
    try:
        await store.redis.ping()
        workers = await store.live_workers()
    except (RedisError, OSError) as exc:
        return JSONResponse({"status": "unavailable", "redis": f"unreachable: {exc}", "workers": []}, 503)
    body = {
        "status": "ready" if workers else "unavailable",
        "redis": "ok",
        "workers": workers,
        "single_user": settings.single_user,
        # Live workers per lane: jobs (training) and sessions (interactive calls).
        "lanes": {lane: sum(1 for w in workers if lane in w.get("lanes", [])) for lane in LANE_QUEUES},
    }
    return JSONResponse(body, 200 if workers else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
