"""Datasets by reference: an ``s3://bucket/key`` or ``file:///path`` URL read where it is, never copied into the
artifact store. ``POST /v1/datasets/references`` checks the file once (as an upload is checked) and records its
size and sha256; a job's worker reads it again at the job's start and refuses bytes that differ.

- ``s3://`` is read with the registering tenant's own keys (GRADSERVE_DATA_CREDENTIALS), chosen by the tenant
  the dataset record belongs to, never by anything in the URL; a URL with a user part is refused.
- ``file://`` is read only under a directory GRADSERVE_DATA_DIRS lists, after every symlink is resolved: a
  path with ``..``, or one whose real location leaves those directories, is a 422 naming the URL.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import obstore
import obstore.exceptions
from obstore.store import S3Store

from models.data.credentials import DataCredentials, parse_credentials
from models.errors import GradserveError, InvalidInput, Loc, PayloadTooLarge
from models.settings import Settings

# format -> the Content-Type its upload would carry (api.dataset_formats tells them apart by it).
FORMATS = {
    "npz": "application/octet-stream",
    "safetensors": "application/octet-stream",
    "parquet": "application/vnd.apache.parquet",
    "tar": "application/x-tar",
    "zip": "application/zip",
}
READ_BYTES = 1024 * 1024


class ReferenceChanged(GradserveError):
    kind = "dataset_reference_changed"


@dataclass(frozen=True)
class Reference:
    url: str
    format: str
    path: Path | None = None  # file://
    bucket: str = ""  # s3://
    key: str = ""

    @property
    def content_type(self) -> str:
        return FORMATS[self.format]


def resolve(url: str, fmt: str | None, *, tenant: str, settings: Settings, loc: Loc) -> Reference:
    """The reference ``url`` names, or a 422 naming the URL: an unknown scheme or format, a file outside
    GRADSERVE_DATA_DIRS, an s3:// URL of a tenant without credentials."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            "a dataset URL carries no credentials; the operator sets them per tenant (GRADSERVE_DATA_CREDENTIALS)",
            loc,
        )
    name = unquote(parts.path).rstrip("/").rsplit("/", 1)[-1]
    if fmt is None:
        fmt = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if fmt not in FORMATS:
            raise InvalidInput(
                f"cannot tell the format of '{url}' from its suffix; name it with \"format\": one of "
                f"{', '.join(FORMATS)}",
                loc,
            )
    if parts.scheme == "file":
        return Reference(url, fmt, path=_allowed_file(url, parts.netloc, unquote(parts.path), settings, loc))
    if parts.scheme == "s3":
        key = unquote(parts.path).lstrip("/")
        if not parts.netloc or not key:
            raise InvalidInput(f"'{url}' names no bucket and object: use s3://bucket/path/file.{fmt}", loc)
        credentials_for(tenant, settings, loc)
        return Reference(url, fmt, bucket=parts.netloc, key=key)
    raise InvalidInput(f"'{url}' is neither an s3:// nor a file:// URL", loc)


def _allowed_file(url: str, host: str, path: str, settings: Settings, loc: Loc) -> Path:
    roots = [Path(d.strip()).resolve() for d in settings.data_dirs.split(",") if d.strip()]
    refused = InvalidInput(
        f"'{url}' is not under a directory this service reads datasets from (GRADSERVE_DATA_DIRS"
        + (")" if roots else " is empty)"),
        loc,
    )
    if host not in ("", "localhost") or ".." in path.split("/") or not path.startswith("/") or not roots:
        raise refused
    real = Path(os.path.realpath(path))  # every symlink resolved, so a link cannot lead out
    if not any(real.is_relative_to(root) for root in roots):
        raise refused
    if not real.is_file():
        raise InvalidInput(f"'{url}' is not a file", loc)
    return real


def credentials_for(tenant: str, settings: Settings, loc: Loc) -> DataCredentials:
    raw = settings.data_credentials
    found = None if raw is None else parse_credentials(raw.get_secret_value()).get(tenant)
    if found is None:
        raise InvalidInput(
            f"tenant '{tenant}' has no credentials for s3:// datasets; the operator sets them "
            "(GRADSERVE_DATA_CREDENTIALS)",
            loc,
        )
    return found


def chunks(ref: Reference, *, tenant: str, settings: Settings, loc: Loc) -> Iterator[bytes]:
    """The referenced file's bytes, a piece at a time."""
    if ref.path is not None:
        with ref.path.open("rb") as f:
            while piece := f.read(READ_BYTES):
                yield piece
        return
    for piece in obstore.get(_bucket(ref.bucket, credentials_for(tenant, settings, loc), settings), ref.key):
        yield bytes(piece)


def _bucket(bucket: str, creds: DataCredentials, settings: Settings) -> S3Store:
    config: dict[str, Any] = {
        "region": creds.region,
        "access_key_id": creds.access_key_id,
        "secret_access_key": creds.secret_access_key,
    }
    if creds.endpoint:
        config["endpoint"] = creds.endpoint
    return S3Store(
        bucket,
        config=config,  # type: ignore[arg-type]
        client_options={
            "allow_http": creds.endpoint.startswith("http://"),
            "connect_timeout": timedelta(seconds=settings.artifacts_timeout_s),
        },
        retry_config={
            "max_retries": 2,
            "retry_timeout": timedelta(seconds=settings.artifacts_timeout_s),
            "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1)},
        },
    )


def copy_to(ref: Reference, out: IO[bytes], *, tenant: str, settings: Settings, loc: Loc) -> tuple[int, str]:
    """Write the referenced file to ``out`` (the API's spool, to check it), refused past GRADSERVE_MAX_UPLOAD_BYTES;
    its size and sha256."""
    digest, size = hashlib.sha256(), 0
    for piece in _read(ref, tenant=tenant, settings=settings, loc=loc):
        size += len(piece)
        if size > settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"'{ref.url}' passes {settings.max_upload_bytes:,} bytes (GRADSERVE_MAX_UPLOAD_BYTES)", loc
            )
        digest.update(piece)
        out.write(piece)
    out.flush()
    return size, digest.hexdigest()


def read_registered(doc: dict[str, Any], settings: Settings) -> bytes:
    """A registered reference's bytes for a job (``doc``: what registering recorded), checked against the sha256
    recorded then: a file changed or replaced since is refused, not trained on."""
    loc: Loc = ("dataset", "url")
    ref = resolve(doc["url"], doc["format"], tenant=doc["tenant"], settings=settings, loc=loc)
    data = b"".join(_read(ref, tenant=doc["tenant"], settings=settings, loc=loc))
    got = hashlib.sha256(data).hexdigest()
    if got != doc["sha256"] or len(data) != doc["size"]:
        raise ReferenceChanged(
            f"'{doc['url']}' changed since it was registered: {len(data):,} bytes with sha256 {got[:16]}…, "
            f"registered as {doc['size']:,} bytes with sha256 {doc['sha256'][:16]}…; register it again",
            loc,
        )
    return data


def _read(ref: Reference, *, tenant: str, settings: Settings, loc: Loc) -> Iterator[bytes]:
    """``chunks``, with a store's or filesystem's failure as a 422 naming the URL (never the keys)."""
    try:
        yield from chunks(ref, tenant=tenant, settings=settings, loc=loc)
    except GradserveError:
        raise
    except (OSError, obstore.exceptions.BaseError) as exc:
        raise InvalidInput(f"'{ref.url}' cannot be read: {type(exc).__name__}", loc) from exc
