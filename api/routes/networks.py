"""Network definitions: validate on the meta device, store, read back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Body, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute

from api.deps import SettingsDep, StoreDep, TenantDep
from api.listing import PagingDep, newest_first
from api.schemas.networks import NetworkPublic, NetworksPublic
from api.strict_json import StrictJsonRoute
from models.errors import InvalidInput, NotFound, PayloadTooLarge
from models.nn.build import validate_network
from models.nn.exported import Mode
from models.nn.exported_admit import MODES, admit
from models.settings import Settings
from models.spec.network import LENET_EXAMPLE, NetworkSpec


class _NetworksRoute(StrictJsonRoute):
    """``POST /v1/networks`` with a multipart body is the exported form (``POST /v1/networks/exported``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.path != "/v1/networks" or "POST" not in (self.methods or set()):
            return handler

        async def route(request: Request) -> Response:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                exported = next(r for r in router.routes if getattr(r, "path", "") == "/v1/networks/exported")
                assert isinstance(exported, APIRoute)
                return await exported.get_route_handler()(request)
            return await handler(request)

        return route


router = APIRouter(prefix="/v1/networks", tags=["networks"], route_class=_NetworksRoute)


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


EXPORTED_FORM = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["form", "train_program", "weights"],
                    "properties": {
                        "form": {"type": "string", "format": "binary", "description": "ExportedForm as JSON"},
                        "train_program": {
                            "type": "string",
                            "format": "binary",
                            "description": "torch._export.serde.serialize.serialize(ep).exported_program (JSON)",
                        },
                        "eval_program": {"type": "string", "format": "binary", "description": "the same, eval mode"},
                        "weights": {"type": "string", "format": "binary", "description": "safetensors state"},
                    },
                }
            }
        }
    }
}


@router.post(
    "/exported", status_code=status.HTTP_201_CREATED, response_model=NetworkPublic, openapi_extra=EXPORTED_FORM
)
async def create_exported_network(
    request: Request, settings: SettingsDep, store: StoreDep, tenant: TenantDep
) -> dict[str, Any]:
    """Store any PyTorch model as torch.export gives it: the graph as JSON, the weights as safetensors.

    Nothing is unpickled: every operator is checked against an allowlist, and the program is built on the
    meta device to estimate its memory before it is admitted."""
    parts = await _exported_parts(request, settings)
    admitted = await run_in_threadpool(admit, parts.pop("form"), _programs(parts), parts["weights"], settings)
    form = admitted.form
    network_id = f"net_{uuid.uuid4().hex}"
    doc = {
        "id": network_id,
        **admitted.summary.public(),
        "format": "export",
        "spec": None,
        "form": form.model_dump(mode="json", exclude={"repr"}),
        "modes": sorted(admitted.programs),
        "created_at": time.time(),
    }
    blobs = {f"{mode}_program": raw for mode, raw in admitted.programs.items()} | {"weights": parts["weights"]}
    await store.put_exported_network(
        tenant=tenant,
        network_id=network_id,
        doc=doc,
        blobs=blobs,
        ttl_s=settings.network_ttl_s,
        quota=settings.tenant_storage_bytes,
    )
    return doc


async def _exported_parts(request: Request, settings: Settings) -> dict[str, bytes]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput(
            "an exported network is a multipart form with parts form, train_program, eval_program and weights",
            ("body",),
        )
    form = await request.form(max_files=8, max_fields=8)
    parts: dict[str, bytes] = {}
    total = 0
    for name in ("form", *(f"{m}_program" for m in MODES), "weights"):
        value = form.get(name)
        if value is None:
            continue
        data = value.encode() if isinstance(value, str) else await value.read()
        total += len(data)
        if total > settings.max_body_bytes:
            raise PayloadTooLarge(f"the upload exceeds {settings.max_body_bytes:,} bytes (GRADSERVE_MAX_BODY_BYTES)")
        parts[name] = data
    unknown = sorted(set(form) - {"form", "weights", *(f"{m}_program" for m in MODES)})
    if unknown:
        raise InvalidInput(
            f"unknown part '{unknown[0]}'; an exported network takes form, train_program, eval_program and weights",
            ("body", unknown[0]),
        )
    for need in ("form", "train_program", "weights"):
        if need not in parts:
            raise InvalidInput(f"the multipart form needs the part '{need}'", ("body", need))
    return parts


def _programs(parts: dict[str, bytes]) -> dict[Mode, bytes]:
    return {m: parts[f"{m}_program"] for m in MODES if f"{m}_program" in parts}


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
