"""Network definitions: validate on the meta device, store, read back."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Body, status
from fastapi.concurrency import run_in_threadpool

from api.deps import SettingsDep, StoreDep, TenantDep
from api.listing import PagingDep, newest_first
from api.schemas.networks import NetworkPublic, NetworksPublic
from api.strict_json import StrictJsonRoute
from models.errors import NotFound
from models.nn.build import validate_network
from models.spec.network import LENET_EXAMPLE, NetworkSpec

router = APIRouter(prefix="/v1/networks", tags=["networks"], route_class=StrictJsonRoute)


def network_doc(network_id: str, spec: NetworkSpec, summary: dict[str, Any]) -> dict[str, Any]:
    # exclude_unset keeps the spec as written, so rebuilding it passes the same constructor keywords.
    spec_doc = spec.model_dump(mode="json", exclude_unset=True)
    return {"id": network_id, **summary, "spec": spec_doc, "created_at": time.time()}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=NetworkPublic)
async def create_network(
    spec: NetworkSpec = Body(openapi_examples={"LeNet": {"summary": "The tutorial's LeNet", "value": LENET_EXAMPLE}}),
    *,
    settings: SettingsDep,
    store: StoreDep,
    tenant: TenantDep,
) -> dict[str, Any]:
    """Validate a network by shape inference on the meta device and store it."""
    summary = await run_in_threadpool(validate_network, spec, settings)
    doc = network_doc(f"net_{uuid.uuid4().hex}", spec, summary.public())
    await store.put_network(
        tenant=tenant, network_id=doc["id"], doc=doc, ttl_s=settings.network_ttl_s, quota=settings.tenant_storage_bytes
    )
    return doc


@router.get("/{network_id}", response_model=NetworkPublic)
async def get_network(network_id: str, store: StoreDep, tenant: TenantDep) -> dict[str, Any]:
    """A stored network: its repr, parameters and output shape."""
    doc = await store.get_network(tenant=tenant, network_id=network_id)
    if doc is None:
        raise NotFound(f"network '{network_id}' not found")
    return doc


@router.get("", response_model=NetworksPublic)
async def list_networks(store: StoreDep, tenant: TenantDep, paging: PagingDep) -> dict[str, Any]:
    """The tenant's networks, newest first."""
    return newest_first(await store.list_networks(tenant=tenant), paging)


@router.delete("/{network_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_network(network_id: str, store: StoreDep, tenant: TenantDep) -> None:
    """Forget a network (jobs and sessions built from it keep their own copy of the spec)."""
    if not await store.delete_network(tenant=tenant, network_id=network_id):
        raise NotFound(f"network '{network_id}' not found")
