"""Uploads in the formats users have, told apart by Content-Type: an image folder as a tar or zip, a
Parquet table. They are checked in full here and stored as received (``models.data.formats``)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from models.data.formats import CONTENT_TYPES, inspect_upload
from models.errors import InvalidInput, PayloadTooLarge
from models.settings import Settings


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_formatted(
    request: Request, settings: Settings, *, label: str | None, features: str | None
) -> tuple[dict[str, Any], bytes] | None:
    """The description and bytes of an image folder or table upload; None for any other Content-Type."""
    kind = media_type(request)
    table = CONTENT_TYPES.get(kind, ("", None))[0] == "parquet"
    if not table and (label is not None or features is not None):
        field = "label" if label is not None else "features"
        raise InvalidInput(
            f"{field} names a table's columns; it goes with Content-Type application/vnd.apache.parquet, not "
            f"'{kind or 'none'}'",
            ("query", field),
        )
    if kind not in CONTENT_TYPES:
        return None
    blob = await request.body()
    if len(blob) > settings.max_dataset_bytes:
        raise PayloadTooLarge(
            f"the dataset has {len(blob):,} bytes; the limit is {settings.max_dataset_bytes:,} "
            "(GRADSERVE_MAX_DATASET_BYTES)"
        )
    meta = await run_in_threadpool(
        inspect_upload,
        blob,
        kind,
        label="label" if label is None else label,
        features=[f.strip() for f in features.split(",") if f.strip()] if features is not None else None,
        max_bytes=settings.max_dataset_bytes,
        max_elements=settings.max_dataset_elements,
    )
    return meta, blob
