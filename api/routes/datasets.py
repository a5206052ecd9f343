"""Uploaded datasets: a safetensors or .npz file with arrays ``inputs`` and ``targets`` (and optionally
``test_inputs``, ``test_targets`` for a held-out split); or an image folder (tar, zip) or Parquet table.

A raw body streams to the artifact store in parts, hashed and counted as it goes and refused (413, nothing
left behind) as soon as it passes GRADSERVE_MAX_UPLOAD_BYTES; it is never held whole in the API's memory.
A local copy spooled alongside is then checked (``api.dataset_formats``) and deleted; a file that fails the
check is deleted from the store too. A multipart form is the small-file path, held whole as before."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.dataset_formats import check_query, inspect_spooled, media_type, spooled
from api.deps import SettingsDep, StoreDep, TenantDep
from api.job_submit import JobStoreDep
from api.listing import PagingDep, newest_first
from api.schemas.jobs import DatasetPublic, DatasetsPublic
from api.strict_json import StrictJsonRoute
from models.data.arrays import parse_dataset
from models.data.formats import CONTENT_TYPES
from models.data.sources import copy_to, resolve
from models.errors import InvalidInput, NotFound, PayloadTooLarge
from models.settings import Settings
from models.store.artifacts import dataset_key
from models.store.usage import over_quota
from models.wire.tensors import describe_array, to_safetensors

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=StrictJsonRoute)

__all__ = ["parse_dataset", "router"]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    response_model_exclude_none=True,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/octet-stream": {},
                "multipart/form-data": {},
                **{kind: {} for kind in CONTENT_TYPES},
            }
        }
    },
)
async def upload_dataset(
    request: Request,
    jobs: JobStoreDep,
    tenant: TenantDep,
    settings: SettingsDep,
    label: Annotated[str | None, Query(max_length=200, description="A table's label column (default 'label').")] = None,
    features: Annotated[
        str | None, Query(max_length=10_000, description="A table's feature columns, comma-separated, in order.")
    ] = None,
) -> Any:
    """Store a dataset: the file as the raw body, or as the ``file`` field of a multipart form. By Content-Type:
    ``application/x-tar`` or ``application/zip`` for an image folder (one subfolder per class),
    ``application/vnd.apache.parquet`` for a table (``?label=COLUMN``, default ``label``; ``?features=a,b``)."""
    dataset_id = f"data_{uuid.uuid4().hex}"
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        check_query(request, label=label, features=features)
        key = dataset_key(tenant, dataset_id)
        room = await jobs.storage_left(tenant=tenant, quota=settings.tenant_storage_bytes)
        with spooled(settings) as spool:
            ref = await jobs.artifacts.put_stream_async(
                key,
                request.stream(),
                max_bytes=min(settings.max_upload_bytes, room),
                too_large=_too_large(settings, room),
                tee=spool.write,  # on the event loop: one chunk into the page cache, microseconds
            )
            spool.flush()
            try:
                described = await run_in_threadpool(
                    inspect_spooled, Path(spool.name), media_type(request), settings, label=label, features=features
                )
            except BaseException:
                await jobs.artifacts.delete_async(key)
                raise
        meta = {"id": dataset_id, **described, "bytes": ref.size, "created_at": time.time()}
        await jobs.record_dataset(
            tenant=tenant,
            dataset_id=dataset_id,
            meta=meta,
            ref=ref,
            ttl_s=settings.job_ttl_s,
            quota=settings.tenant_storage_bytes,
        )
        return meta
    described, stored = await _arrays_upload(request, settings)
    meta = {"id": dataset_id, **described, "bytes": len(stored), "created_at": time.time()}
    await jobs.put_dataset(
        tenant=tenant,
        dataset_id=dataset_id,
        meta=meta,
        data=stored,
        ttl_s=settings.job_ttl_s,
        quota=settings.tenant_storage_bytes,
    )
    return meta


def _too_large(settings: Settings, room: int) -> Callable[[int], PayloadTooLarge]:
    """The 413 of an upload stopped midway: past GRADSERVE_MAX_UPLOAD_BYTES, or past the tenant's quota."""

    def error(seen: int) -> PayloadTooLarge:
        quota = settings.tenant_storage_bytes
        if room < settings.max_upload_bytes:
            return over_quota(used=quota - room, adding=seen, quota=quota, what="the dataset upload (stopped midway)")
        return PayloadTooLarge(
            f"the dataset upload passed its limit of {settings.max_upload_bytes:,} bytes (GRADSERVE_MAX_UPLOAD_BYTES) "
            f"at {seen:,} bytes; nothing was kept"
        )

    return error


async def _arrays_upload(request: Request, settings: Settings) -> tuple[dict[str, Any], bytes]:
    """A safetensors or .npz file sent as a multipart form: its description, and the safetensors file stored
    for it (a form is read whole, under GRADSERVE_MAX_BODY_BYTES)."""
    form = await request.form()
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidInput("the multipart form needs a file field named 'file'", ("body", "file"))
    blob = await upload.read()
    if len(blob) > settings.max_dataset_bytes:
        raise PayloadTooLarge(
            f"the dataset has {len(blob):,} bytes; the limit is {settings.max_dataset_bytes:,} "
            "(GRADSERVE_MAX_DATASET_BYTES)"
        )
    fmt, tensors = await run_in_threadpool(parse_dataset, blob, settings)
    stored = await run_in_threadpool(to_safetensors, tensors)
    described = {
        "format": fmt,
        "num_samples": int(tensors["inputs"].shape[0]),
        "arrays": {k: describe_array(t) for k, t in tensors.items()},
    }
    return described, stored


class DatasetReference(BaseModel):
    """A dataset read where it is (``models.data.sources``): checked once now, read again by each job."""

    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="s3://bucket/path/file.parquet (read with your tenant's keys) or file:///path under a "
        "directory the operator allows (GRADSERVE_DATA_DIRS)."
    )
    format: Literal["npz", "safetensors", "parquet", "tar", "zip"] | None = Field(
        default=None, description="The file's format; by default from the URL's suffix. tar and zip: an image folder."
    )
    label: Annotated[str, Field(max_length=200)] | None = Field(default=None, description="A table's label column.")
    features: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=10_000)] | None = None


@router.post(
    "/references", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic, response_model_exclude_none=True
)
async def register_dataset(body: DatasetReference, jobs: JobStoreDep, tenant: TenantDep, settings: SettingsDep) -> Any:
    """Register a dataset by reference, without copying it: the file is read and checked once, as an upload
    is, and its size and sha256 recorded; a job uses it as ``{"source": "upload", "id": ...}`` and its worker
    reads the URL at the job's start, refusing a file that changed since."""
    loc = ("body", "url")
    if body.format != "parquet" and body.format is not None and (body.label or body.features):
        raise InvalidInput("label and features name a table's columns; they go with a parquet file", loc)
    ref = resolve(body.url, body.format, tenant=tenant, settings=settings, loc=loc)
    with spooled(settings) as spool:
        size, sha256 = await run_in_threadpool(copy_to, ref, spool, tenant=tenant, settings=settings, loc=loc)
        features = None if body.features is None else ",".join(body.features)
        described = await run_in_threadpool(
            inspect_spooled, Path(spool.name), ref.content_type, settings, label=body.label, features=features
        )
    dataset_id = f"data_{uuid.uuid4().hex}"
    meta = {
        "id": dataset_id,
        **described,
        "source": "url",
        "url": body.url,
        "sha256": sha256,
        "bytes": size,
        "created_at": time.time(),
    }
    doc = {"url": body.url, "format": ref.format, "tenant": tenant, "size": size, "sha256": sha256}
    await jobs.record_dataset(
        tenant=tenant,
        dataset_id=dataset_id,
        meta=meta,
        ref=None,
        ttl_s=settings.job_ttl_s,
        quota=settings.tenant_storage_bytes,
        fields={"url": json.dumps(doc)},
    )
    return meta


@router.get("/{dataset_id}", response_model=DatasetPublic, response_model_exclude_none=True)
async def get_dataset(dataset_id: str, jobs: JobStoreDep, tenant: TenantDep) -> Any:
    """An uploaded dataset's arrays: shapes and dtypes."""
    meta = await jobs.dataset_meta(tenant=tenant, dataset_id=dataset_id)
    if meta is None:
        raise NotFound(f"dataset '{dataset_id}' not found")
    return meta


@router.get("", response_model=DatasetsPublic, response_model_exclude_none=True)
async def list_datasets(store: StoreDep, tenant: TenantDep, paging: PagingDep) -> Any:
    """The tenant's uploaded datasets, newest first."""
    ids = await store.ids(tenant=tenant, kind="data")
    rows = await store.hash_fields([store.keys.dataset(tenant, i) for i in ids], "meta")
    return newest_first([json.loads(meta) for (meta,) in rows if meta is not None], paging)


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dataset(dataset_id: str, jobs: JobStoreDep, tenant: TenantDep) -> Response:
    """Delete an uploaded dataset and free its bytes; a queued job that uses it then fails, saying so."""
    if not await jobs.delete_dataset(tenant=tenant, dataset_id=dataset_id):
        raise NotFound(f"dataset '{dataset_id}' not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
