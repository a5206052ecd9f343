"""Dependencies as ``Annotated`` aliases: settings, Redis, the store, the Celery producer, the tenant."""

from __future__ import annotations

import secrets
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from redis.asyncio import Redis

from models.errors import Unauthorized
from models.settings import LOCAL_TENANT, Settings
from models.store.redis import Store


def get_app_settings(request: Request) -> Settings:
    """The settings ``create_app`` was given (tests pass their own), read from the app."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


RedisDep = Annotated[Redis, Depends(get_redis)]
StoreDep = Annotated[Store, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_tenant(request: Request, settings: SettingsDep) -> str:
    """The tenant of the request's API key; single-user mode (no keys configured) has one tenant."""
    return tenant_for(request.headers.get("authorization", ""), settings)


def tenant_for(authorization: str, settings: Settings) -> str:
    """The tenant an ``Authorization`` header's value names; Unauthorized when it names none."""
    tenants = settings.tenants_by_key
    if not tenants:
        return LOCAL_TENANT
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    for key, tenant in tenants.items():
        if secrets.compare_digest(key.encode(), token.strip().encode()):
            return tenant
    raise Unauthorized("unknown API key")


TenantDep = Annotated[str, Depends(get_tenant)]
