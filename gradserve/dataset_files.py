"""Dataset files as ``POST /v1/datasets`` takes them: the request for a file (its format from the suffix), and
a class-folder directory packed as a tar in memory (the service reads it as torchvision's ImageFolder)."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

SUFFIXES = {
    ".npz": "application/octet-stream",
    ".safetensors": "application/octet-stream",
    ".parquet": "application/vnd.apache.parquet",
    ".tar": "application/x-tar",
    ".zip": "application/zip",
}
IMAGES = (".png", ".jpg", ".jpeg")
CHUNK_BYTES = 1024 * 1024


def file_request(path: str | os.PathLike[str], label: str | None, features: list[str] | None) -> dict[str, Any]:
    """``content``, ``headers`` and ``params`` of the upload of a dataset file."""
    p = Path(path)
    kind = SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise ValueError(f"cannot tell the format of '{p.name}' from its suffix; use one of {', '.join(SUFFIXES)}")
    params: dict[str, str] = {}
    if label is not None:
        params["label"] = label
    if features is not None:
        params["features"] = ",".join(features)
    size = p.stat().st_size  # a missing file fails here, before any request
    return {"content": file_chunks(p), "headers": {"Content-Type": kind, "Content-Length": str(size)}, "params": params}


def file_chunks(path: Path) -> Iterator[bytes]:
    """The file a piece at a time: the service streams it to its store, and neither side holds it whole."""
    with path.open("rb") as f:
        while piece := f.read(CHUNK_BYTES):
            yield piece


async def file_chunks_async(path: Path) -> AsyncIterator[bytes]:
    """``file_chunks`` for an async client (the reads are local and short)."""
    for piece in file_chunks(path):
        yield piece


def folder_tar(path: str | os.PathLike[str]) -> bytes:
    """The PNG and JPEG files under ``path`` (one subfolder per class), as an uncompressed tar: PNG and JPEG
    are compressed already. Links are followed, as ImageFolder follows them; hidden files are left out."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"'{root}' is not a directory; an image folder holds one subfolder per class")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:
        for file in sorted(root.rglob("*")):
            rel = file.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not file.is_file():
                continue
            if file.suffix.lower() in IMAGES:
                tar.add(file, arcname=rel.as_posix(), recursive=False)
    return buf.getvalue()


def reference_body(url: str, fmt: str | None, label: str | None, features: list[str] | None) -> dict[str, Any]:
    """The body of ``POST /v1/datasets/references``: the URL, and what is given of its format and columns."""
    body: dict[str, Any] = {"url": url}
    for name, value in (("format", fmt), ("label", label), ("features", features)):
        if value is not None:
            body[name] = value
    return body
