"""Listing sessions (their calls and deletion are api.routes.sessions)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import StoreDep, TenantDep
from api.listing import PagingDep, newest_first
from api.schemas.sessions import SessionPublic
from api.strict_json import StrictJsonRoute

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], route_class=StrictJsonRoute)


class SessionListed(SessionPublic):
    created_at: float | None = None


class SessionsPublic(BaseModel):
    data: list[SessionListed]
    count: int
    total: int
    next_offset: int | None


@router.get("", response_model=SessionsPublic)
async def list_sessions(store: StoreDep, tenant: TenantDep, paging: PagingDep) -> dict[str, Any]:
    """The tenant's live sessions, newest first."""
    ids = await store.ids(tenant=tenant, kind="sess")
    rows = await store.hash_fields([store.keys.session(tenant, i) for i in ids], "meta", "version")
    docs = []
    for meta, version in rows:
        if meta is not None:  # expired between the scan and the read
            doc = json.loads(meta)
            docs.append({**doc["public"], "version": int(version or 0), "created_at": doc.get("created_at")})
    return newest_first(docs, paging)
