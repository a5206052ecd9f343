"""Uploaded datasets: a safetensors or .npz file with arrays ``inputs`` and ``targets`` (and optionally
``test_inputs``, ``test_targets`` for a held-out split), stored as safetensors for jobs to use; or an
image folder (tar, zip) or Parquet table, stored as received (``api.dataset_formats``)."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterable
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from api.dataset_formats import read_formatted
from api.deps import SettingsDep, StoreDep, TenantDep
from api.job_submit import JobStoreDep
from api.listing import PagingDep, newest_first
from api.schemas.jobs import DatasetPublic, DatasetsPublic
from api.strict_json import StrictJsonRoute
from models.data.formats import CONTENT_TYPES
from models.errors import InvalidInput, NotFound, PayloadTooLarge
from models.settings import Settings
from models.wire.file_headers import NPY_HEADER_ROOM, npz_decoded_bytes, safetensors_decoded_bytes
from models.wire.tensors import DTYPE_NAMES, describe_array, from_safetensors, to_safetensors
from models.wire.zip_members import member_bytes

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=StrictJsonRoute)
ARRAYS = ("inputs", "targets", "test_inputs", "test_targets")
LOC = ("body",)
# A dataset's safetensors header names four arrays at most: 200,000 names took seconds to parse.
MAX_HEADER_BYTES = 64 * 1024


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
    formatted = await read_formatted(request, settings, label=label, features=features)
    if formatted is not None:
        described, stored = formatted
    else:
        described, stored = await _arrays_upload(request, settings)
    dataset_id = f"data_{uuid.uuid4().hex}"
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


async def _arrays_upload(request: Request, settings: Settings) -> tuple[dict[str, Any], bytes]:
    """A safetensors or .npz file's description, and the safetensors file stored for it."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidInput("the multipart form needs a file field named 'file'", ("body", "file"))
        blob = await upload.read()
    else:
        blob = await request.body()
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


def parse_dataset(blob: bytes, settings: Settings) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a safetensors or .npz file (never pickle) and check its arrays."""
    npz = blob[:4] == b"PK\x03\x04"
    if npz:
        sizes = npz_decoded_bytes(blob, loc=LOC)
    else:
        sizes = safetensors_decoded_bytes(blob, loc=LOC, max_header=MAX_HEADER_BYTES)
    _known_arrays(sizes)  # from the headers, before a file of 200,000 arrays is decoded
    decoded = sum(sizes.values())
    if decoded > settings.max_dataset_bytes:
        raise PayloadTooLarge(
            f"the {'.npz' if npz else 'safetensors'} file's arrays would take {decoded:,} bytes once decoded "
            f"({', '.join(f'{k}: {v:,}' for k, v in sizes.items())}); the limit is "
            f"{settings.max_dataset_bytes:,} (GRADSERVE_MAX_DATASET_BYTES)"
        )
    if npz:
        fmt, tensors = "npz", _npz(blob, sizes, max_bytes=settings.max_dataset_elements * 8)
    else:
        fmt, tensors = "safetensors", from_safetensors(blob, loc=LOC)
    for prefix in ("", "test_"):
        x, y = tensors.get(prefix + "inputs"), tensors.get(prefix + "targets")
        if (x is None) != (y is None) or (prefix == "" and x is None):
            raise InvalidInput(f"the file needs arrays '{prefix}inputs' and '{prefix}targets' together", LOC)
        if x is None or y is None:
            continue
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise InvalidInput(
                f"{prefix}inputs {list(x.shape)} and {prefix}targets {list(y.shape)} need the same "
                "non-zero number of rows (samples)",
                (*LOC, prefix + "inputs"),
            )
    total = sum(t.numel() for t in tensors.values())
    if total > settings.max_dataset_elements:
        raise PayloadTooLarge(
            f"the dataset has {total:,} values; the limit is {settings.max_dataset_elements:,} "
            "(GRADSERVE_MAX_DATASET_ELEMENTS)"
        )
    for name, t in tensors.items():
        if t.dtype not in DTYPE_NAMES or (t.dtype == torch.bool and name.endswith("inputs")):
            raise InvalidInput(f"array '{name}' has dtype {t.dtype}; use float32/64 or integers", (*LOC, name))
    return fmt, tensors


def _known_arrays(names: Iterable[str]) -> None:
    unknown = sorted(set(names) - set(ARRAYS))
    if unknown:
        shown = ", ".join(repr(n[:40]) for n in unknown[:5]) + (
            f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
        )
        raise InvalidInput(f"unexpected arrays {shown}; a dataset holds {', '.join(ARRAYS)}", LOC)


def _npz(blob: bytes, sizes: dict[str, int], *, max_bytes: int) -> dict[str, torch.Tensor]:
    """The arrays of an .npz whose headers declared ``sizes`` (bytes once loaded, widened integers'
    included, so never less than their stored data)."""
    try:
        # .npz members may be compressed: a few KB can inflate to many GB, so the sizes the zip
        # directory declares are checked first, and each member is inflated under a cap (the
        # directory may lie) of what its array header declares.
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            members = archive.infolist()
        inflated = sum(info.file_size for info in members)
        if inflated > max_bytes:
            raise PayloadTooLarge(
                f"the .npz file inflates to {inflated:,} bytes; the limit is {max_bytes:,} "
                "(8 bytes per value of GRADSERVE_MAX_DATASET_ELEMENTS)"
            )
        arrays = {}
        for info in members:
            name = info.filename.removesuffix(".npy")
            raw = member_bytes(blob, info, sizes[name] + NPY_HEADER_ROOM, loc=LOC)
            # allow_pickle=False: an object array (the only kind that needs pickle) is refused, not loaded.
            arrays[name] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(f"not a readable .npz file (object arrays are refused): {exc}", LOC) from exc
    out = {}
    for name, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise InvalidInput(f"array '{name}' has dtype {arr.dtype}; only numbers are accepted", (*LOC, name))
        if arr.dtype.kind == "u" and arr.dtype != np.uint8:
            if arr.size and int(arr.max()) > np.iinfo(np.int64).max:  # astype would wrap it to a negative
                raise InvalidInput(f"array '{name}' holds values above the int64 range", (*LOC, name))
            arr = arr.astype(np.int64)
        if arr.dtype in (np.int8, np.int16):
            arr = arr.astype(np.int32)
        out[name] = torch.from_numpy(np.ascontiguousarray(arr))
    return out
