"""What the calling tenant stores, against its storage quota."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import RedisDep, SettingsDep, StoreDep, TenantDep
from api.strict_json import StrictJsonRoute
from models.store.usage import summary

router = APIRouter(prefix="/v1/usage", tags=["usage"], route_class=StrictJsonRoute)  # ?x=1 is a 422


class KindUsage(BaseModel):
    count: int
    bytes: int


class UsagePublic(BaseModel):
    tenant: str
    bytes: int
    quota_bytes: int
    networks: KindUsage
    datasets: KindUsage
    jobs: KindUsage
    sessions: KindUsage


@router.get("", response_model=UsagePublic)
async def get_usage(redis: RedisDep, store: StoreDep, tenant: TenantDep, settings: SettingsDep) -> dict[str, Any]:
    """Bytes and counts of the tenant's networks, datasets, jobs and sessions (a job counts at the most it
    may write: data, checkpoints, gradient snapshots, records; a session at the most its state holds:
    weights, grads, optimizer moments), and the quota they count against."""
    kinds = await summary(redis, store.keys, tenant=tenant)
    total = sum(k["bytes"] for k in kinds.values())
    return {"tenant": tenant, "bytes": total, "quota_bytes": settings.tenant_storage_bytes, **kinds}
