"""The artifact store: blobs (checkpoints, uploaded datasets, exports) kept out of Redis, in a directory
(``file://``, the default, under ``gradserve up``'s state dir) or an S3-compatible bucket (``s3://bucket/prefix``),
both through obstore (object_store's Rust clients: request signing, retries, multipart uploads).

Redis keeps each object's record, an ``ArtifactRef`` (key, size, sha256); every read checks the bytes against
it, so a truncated or altered object is an error (``ArtifactCorrupt``), never data. Writes are atomic on both
backends: the directory store writes a staging file and renames it, an S3 PUT (or a completed multipart upload)
is visible whole or not at all. Object keys are ``{tenant}/{kind}/{id}/...``, so a tenant's objects share a
prefix, and deleting a job or dataset is one prefix deletion.

    ArtifactError                      (models.errors.GradserveError)
     ├── ArtifactUnavailable     503   the store cannot be reached or refuses writes; retry
     └── ArtifactCorrupt         500   an object's bytes differ from the sha256 its record holds
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import LocalStore, ObjectStore, S3Store

from models.errors import GradserveError, NotFound, ServiceUnavailable
from models.settings import Settings

log = logging.getLogger(__name__)

# What obstore raises for a missing object: its own error from S3, Python's from the directory store.
MISSING = (NotFoundError, FileNotFoundError)

# Parts of a multipart upload: S3's minimum part is 5 MiB, and each part is held in memory while it goes.
PART_BYTES = 8 * 1024 * 1024


class ArtifactUnavailable(ServiceUnavailable):
    kind = "artifact_store_unavailable"


class ArtifactCorrupt(GradserveError):
    kind = "artifact_corrupt"


@dataclass(frozen=True)
class ArtifactRef:
    """What Redis keeps of one object: where it is, its size and its sha256 (hex)."""

    key: str
    size: int
    sha256: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ArtifactRef:
        doc = json.loads(raw)
        size = doc["size"] if "size" in doc else doc["bytes"]  # a checkpoint's index entry says "bytes"
        return cls(key=str(doc["key"]), size=int(size), sha256=str(doc["sha256"]))


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    modified: datetime


class Artifacts:
    """Put, get, delete and list objects by key; sync for workers, ``*_async`` for the API's event loop."""

    def __init__(self, store: ObjectStore, where: str, retry_after_s: int = 2) -> None:
        self.store, self.where, self.retry_after_s = store, where, retry_after_s

    # --- writes ---
    def put(self, key: str, data: bytes | Iterator[bytes]) -> ArtifactRef:
        """Write ``data`` (bytes, or chunks streamed in parts) under ``key``, whole or not at all."""
        digest, size, body = _hashing(data)
        with self._errors("write", key):
            obstore.put(self.store, key, body, chunk_size=PART_BYTES)
        return ArtifactRef(key, size(), digest.hexdigest())

    async def put_async(self, key: str, data: bytes) -> ArtifactRef:
        with self._errors("write", key):
            await obstore.put_async(self.store, key, data, chunk_size=PART_BYTES)
        return ArtifactRef(key, len(data), hashlib.sha256(data).hexdigest())

    async def put_stream_async(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        max_bytes: int,
        too_large: Callable[[int], GradserveError],
        tee: Callable[[bytes], object] | None = None,
    ) -> ArtifactRef:
        """Write a stream of chunks under ``key`` in parts (S3 multipart; a staging file renamed on file://),
        hashing and counting as they go, so the body is never held whole. ``too_large(seen)`` is raised as soon
        as the stream passes ``max_bytes``; the upload is then aborted and nothing is left under ``key``.
        ``tee`` sees every chunk too (the API keeps a local copy to validate)."""
        digest = hashlib.sha256()
        seen = 0
        over: list[GradserveError] = []

        async def counted() -> AsyncIterator[bytes]:
            nonlocal seen
            async for chunk in chunks:
                if not chunk:
                    continue
                seen += len(chunk)
                if seen > max_bytes:
                    over.append(too_large(seen))
                    raise over[0]
                digest.update(chunk)
                if tee is not None:
                    tee(chunk)
                yield chunk

        try:
            with self._errors("write", key):
                await obstore.put_async(self.store, key, counted(), chunk_size=PART_BYTES)
        except BaseException:
            # obstore aborts its multipart upload (or drops its staging file) when the stream fails; an
            # exception raised inside the stream may come back wrapped, so the one raised is given back.
            await self.delete_async(key)
            if over:
                raise over[0] from None
            raise
        return ArtifactRef(key, seen, digest.hexdigest())

    # --- reads ---
    def get(self, ref: ArtifactRef) -> bytes:
        with self._errors("read", ref.key):
            data = obstore.get(self.store, ref.key).bytes().to_bytes()
        return _checked(ref, data)

    async def get_async(self, ref: ArtifactRef) -> bytes:
        with self._errors("read", ref.key):
            data = (await (await obstore.get_async(self.store, ref.key)).bytes_async()).to_bytes()
        return _checked(ref, data)

    def size(self, key: str) -> int | None:
        """The object's bytes as stored, or None when there is none."""
        with self._errors("stat", key):
            try:
                return int(obstore.head(self.store, key)["size"])
            except MISSING:
                return None

    def list(self, prefix: str) -> list[Listed]:
        with self._errors("list", prefix):
            return [
                Listed(m["path"], int(m["size"]), m["last_modified"])
                for batch in obstore.list(self.store, prefix=prefix)
                for m in batch
            ]

    # --- deletes ---
    def delete(self, key: str) -> None:
        """Delete one object; one that is already gone is no error."""
        with self._errors("delete", key), contextlib.suppress(*MISSING):
            obstore.delete(self.store, key)

    async def delete_async(self, key: str) -> None:
        with self._errors("delete", key), contextlib.suppress(*MISSING):
            await obstore.delete_async(self.store, key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (a folder: it should end with ``/``); returns how many."""
        keys = [item.key for item in self.list(prefix)]
        with self._errors("delete", prefix):
            if keys:
                obstore.delete(self.store, keys)
        return len(keys)

    async def delete_prefix_async(self, prefix: str) -> int:
        keys: list[str] = []
        with self._errors("delete", prefix):
            async for batch in obstore.list(self.store, prefix=prefix):
                keys += [m["path"] for m in batch]
            if keys:
                await obstore.delete_async(self.store, keys)
        return len(keys)

    def _errors(self, verb: str, key: str) -> _Translate:
        return _Translate(self, verb, key)


class _Translate:
    """obstore's and the filesystem's errors as ArtifactUnavailable: a 503 with Retry-After in the API, a failed
    attempt in a worker. NotFoundError passes through for the callers that expect it."""

    def __init__(self, artifacts: Artifacts, verb: str, key: str) -> None:
        self.artifacts, self.verb, self.key = artifacts, verb, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None or isinstance(exc, GradserveError):
            return
        if isinstance(exc, MISSING):
            if self.verb == "read":  # its record exists, so the object should: never silently nothing
                raise NotFound(f"artifact '{self.key}' is gone from the store ({self.artifacts.where})") from exc
            return
        if isinstance(exc, (BaseError, OSError)):
            a = self.artifacts
            log.warning("artifact store (%s): %s of %s failed: %s", a.where, self.verb, self.key, exc)
            raise ArtifactUnavailable(
                f"the artifact store ({a.where}) could not {self.verb} '{self.key}': {type(exc).__name__}; "
                f"nothing was half-written; retry in {a.retry_after_s} s",
                retry_after=a.retry_after_s,
            ) from exc


def _hashing(data: bytes | Iterator[bytes]) -> tuple[Any, Any, bytes | Iterator[bytes]]:
    """A sha256 and a byte count that fill in as the body is read (once, by the upload)."""
    digest = hashlib.sha256()
    if isinstance(data, bytes):
        digest.update(data)
        return digest, lambda: len(data), data
    seen = [0]

    def chunks() -> Iterator[bytes]:
        for chunk in data:
            digest.update(chunk)
            seen[0] += len(chunk)
            yield chunk

    return digest, lambda: seen[0], chunks()


def _checked(ref: ArtifactRef, data: bytes) -> bytes:
    got = hashlib.sha256(data).hexdigest()
    if len(data) != ref.size or got != ref.sha256:
        raise ArtifactCorrupt(
            f"artifact '{ref.key}' is corrupt: {len(data):,} bytes with sha256 {got[:16]}…, "
            f"its record says {ref.size:,} bytes with sha256 {ref.sha256[:16]}…; it is not used"
        )
    return data


def open_artifacts(settings: Settings) -> Artifacts:
    """The store ``GRADSERVE_ARTIFACTS_URL`` names; S3 keys come from their own settings and are never logged."""
    url = settings.artifacts_url
    parts = urlsplit(url)
    if parts.scheme == "file":
        root = Path(parts.netloc + parts.path).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        return Artifacts(LocalStore(root), f"file://{root}", settings.retry_after_s)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"GRADSERVE_ARTIFACTS_URL={where(url)} names no bucket: use s3://bucket/prefix")
        config: dict[str, Any] = {"region": settings.s3_region}
        if settings.s3_endpoint_url:
            config["endpoint"] = settings.s3_endpoint_url
        if settings.s3_access_key_id:
            config["access_key_id"] = settings.s3_access_key_id.get_secret_value()
        if settings.s3_secret_access_key:
            config["secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
        s3 = S3Store(
            parts.netloc,
            prefix=parts.path.strip("/") or None,
            config=config,  # type: ignore[arg-type]
            client_options={
                "allow_http": settings.s3_endpoint_url.startswith("http://"),
                "connect_timeout": timedelta(seconds=settings.artifacts_timeout_s),
                "timeout": timedelta(seconds=10 * settings.artifacts_timeout_s),
            },
            # A store that is down answers a 503 in seconds, not after object_store's default 3 minutes of retries.
            retry_config={
                "max_retries": 2,
                "retry_timeout": timedelta(seconds=settings.artifacts_timeout_s),
                "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1)},
            },
        )
        return Artifacts(s3, where(url), settings.retry_after_s)
    raise ValueError(f"GRADSERVE_ARTIFACTS_URL={where(url)}: use file:///path or s3://bucket/prefix")


@lru_cache(maxsize=4)
def shared_artifacts(settings: Settings) -> Artifacts:
    """One store client per process and settings (a worker's jobs share its connection pool)."""
    return open_artifacts(settings)


def where(url: str) -> str:
    """The store's URL for messages and logs, any user part masked (keys belong in their own settings)."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()
    return url


# --- object keys: one place spells them ---
def job_prefix(tenant: str, job_id: str) -> str:
    return f"{tenant}/jobs/{job_id}/"


def checkpoint_key(tenant: str, job_id: str, step: int, nonce: str) -> str:
    """A checkpoint's full training state; ``nonce`` keeps a rerun's write of the same step from replacing the
    object an earlier run's record still points at."""
    return f"{job_prefix(tenant, job_id)}ckpt/{step:012d}-{nonce}.safetensors"


def job_blob_key(tenant: str, job_id: str, name: str) -> str:
    """Another file of a job: ``exports/{format}-{step}``, ``fork-start``."""
    return f"{job_prefix(tenant, job_id)}{name}"


def dataset_prefix(tenant: str, dataset_id: str) -> str:
    return f"{tenant}/datasets/{dataset_id}/"


def dataset_key(tenant: str, dataset_id: str) -> str:
    return f"{dataset_prefix(tenant, dataset_id)}data.safetensors"
