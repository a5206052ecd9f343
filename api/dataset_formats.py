"""Uploads in the formats users have, told apart by Content-Type: an image folder as a tar or zip, a Parquet
table, or arrays (.npz, safetensors). Each is streamed to the store as received, spooled to a local file
alongside, and checked in full from that file here (``models.data.formats``, ``models.data.npz_scan``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from fastapi import Request

from models.data.arrays import MAX_HEADER_BYTES, parse_dataset
from models.data.formats import CONTENT_TYPES, inspect_upload
from models.data.npz_scan import scan_npz
from models.errors import InvalidInput, PayloadTooLarge
from models.settings import Settings
from models.wire.tensors import describe_array


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_query(request: Request, *, label: str | None, features: str | None) -> None:
    """``label`` and ``features`` name a table's columns: a 422 for them with any other Content-Type."""
    kind = media_type(request)
    table = CONTENT_TYPES.get(kind, ("", None))[0] == "parquet"
    if not table and (label is not None or features is not None):
        field = "label" if label is not None else "features"
        raise InvalidInput(
            f"{field} names a table's columns; it goes with Content-Type application/vnd.apache.parquet, not "
            f"'{kind or 'none'}'",
            ("query", field),
        )


@contextmanager
def spooled(settings: Settings) -> Iterator[IO[bytes]]:
    """The local file a streamed upload is copied to while it goes to the store, deleted afterwards."""
    with tempfile.NamedTemporaryFile(prefix="gradserve-upload-", dir=settings.upload_spool_dir or None) as spool:
        yield spool


def inspect_spooled(
    path: Path, kind: str, settings: Settings, *, label: str | None, features: str | None
) -> dict[str, Any]:
    """The description of the dataset file spooled at ``path``; a 4xx naming what is wrong.

    An .npz is scanned a chunk at a time (``models.data.npz_scan``): the API's memory stays bounded whatever
    its size. Image folders, tables and safetensors files are read whole here, as their inspectors decode
    every image or column anyway; GRADSERVE_MAX_DATASET_BYTES bounds them."""
    if kind in CONTENT_TYPES:
        if path.stat().st_size > settings.max_dataset_bytes:
            raise PayloadTooLarge(
                f"the dataset has {path.stat().st_size:,} bytes; the limit is {settings.max_dataset_bytes:,} "
                "(GRADSERVE_MAX_DATASET_BYTES)"
            )
        return inspect_upload(
            path.read_bytes(),
            kind,
            label="label" if label is None else label,
            features=[f.strip() for f in features.split(",") if f.strip()] if features is not None else None,
            max_bytes=settings.max_dataset_bytes,
            max_elements=settings.max_dataset_elements,
        )
    with path.open("rb") as f:
        npz = f.read(4) == b"PK\x03\x04"
    if npz:
        found = scan_npz(path, max_bytes=settings.max_dataset_bytes, max_elements=settings.max_dataset_elements)
        return {"format": "npz", **found, "decode": {"format": "npz"}}
    if path.stat().st_size > settings.max_dataset_bytes + MAX_HEADER_BYTES:
        raise PayloadTooLarge(
            f"the safetensors file has {path.stat().st_size:,} bytes; the limit is {settings.max_dataset_bytes:,} "
            "(GRADSERVE_MAX_DATASET_BYTES)"
        )
    fmt, tensors = parse_dataset(path.read_bytes(), settings)
    return {
        "format": fmt,
        "num_samples": int(tensors["inputs"].shape[0]),
        "arrays": {k: describe_array(t) for k, t in tensors.items()},
    }
