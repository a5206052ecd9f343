"""Builds the FastAPI app. Run with ``gradserve api`` or ``uvicorn --factory api.main:create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import FastAPI
from redis.asyncio import Redis

from api.body_limits import BodySizeLimit, KeyFirst
from api.calls import SessionCalls
from api.errors import install_error_handlers
from api.idempotency import Idempotency
from api.metrics import RequestMetrics
from api.openapi import install_openapi
from api.outages import install_outage_handlers
from api.routes import (
    datasets,
    health,
    job_captures,
    job_export,
    job_fork,
    job_resume,
    job_sessions,
    job_tensorboard,
    job_views,
    jobs,
    networks,
    session_list,
    sessions,
    ui,
    usage,
)
from api.routes import protocol as protocol_routes
from api.routes import sweeps as sweep_routes
from api.unexpected import UnexpectedErrors
from models.settings import Settings, get_settings
from models.store.artifacts import shared_artifacts
from models.store.connect import redis_options
from models.store.keys import Keys
from models.store.redis import Store
from models.tasks import celery_config

DESCRIPTION = """Training as a service for PyTorch: define a network, drive it step by step or train it
on workers, and look inside: losses, gradients, autograd graphs. Errors are `{"detail": ...}`:
422 invalid input (with `loc`), 404 unknown id, 409 wrong state, 413 too large."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.redis_url is None:
            raise RuntimeError("REDIS_URL is not set: start the service with `gradserve up`, or set REDIS_URL")
        redis = Redis.from_url(settings.redis_url, **redis_options(settings))
        producer = Celery("gradserve-api")
        producer.conf.update(celery_config(settings))
        app.state.redis = redis
        app.state.store = Store(redis, Keys(settings.key_prefix))
        app.state.artifacts = shared_artifacts(settings)
        app.state.celery = producer
        app.state.session_calls = SessionCalls(redis, app.state.store.keys, settings)
        try:
            yield
        finally:
            producer.close()
            await redis.aclose()

    # /docs is served by api.routes.ui from vendored files (FastAPI's own page loads Swagger UI from a CDN).
    app = FastAPI(
        title="gradserve", version="1.0.0", description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    # On the app rather than a dependency override: with any override present, FastAPI re-inspects
    # every dependency on every request (~1.4 ms a call).
    app.state.settings = settings
    install_error_handlers(app)
    install_outage_handlers(app, settings.retry_after_s)
    install_openapi(app)
    app.include_router(health.router)
    app.include_router(protocol_routes.router)
    app.include_router(networks.router)
    app.include_router(sessions.router)
    app.include_router(session_list.router)
    app.include_router(jobs.router)
    app.include_router(job_captures.router)
    app.include_router(datasets.router)
    app.include_router(job_export.router)
    app.include_router(job_fork.router)
    app.include_router(job_resume.router)
    app.include_router(job_sessions.router)
    app.include_router(job_sessions.batch_router)
    app.include_router(usage.router)
    app.add_middleware(Idempotency, settings=settings)  # inside BodySizeLimit: it buffers bodies
    app.include_router(job_views.router)
    app.include_router(job_tensorboard.router)
    ui.install(app)
    app.include_router(sweep_routes.router)
    app.add_middleware(BodySizeLimit, settings=settings)
    app.add_middleware(KeyFirst, settings=settings)  # outside BodySizeLimit: no key, no body read at all
    app.add_middleware(RequestMetrics)
    app.add_middleware(UnexpectedErrors)  # outermost: a bug is one 500, never a reset connection
    return app
