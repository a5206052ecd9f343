"""The artifact store on both backends (a directory, and moto's S3 server): atomic puts, sha256 checked on
read, prefix deletion, outages as ArtifactUnavailable (a 503), and keys that never show in messages."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from pathlib import Path

import obstore
import pytest

from models.errors import NotFound
from models.settings import Settings
from models.store.artifacts import ArtifactCorrupt, ArtifactRef, Artifacts, ArtifactUnavailable, open_artifacts, where
from tests.conftest import S3Server


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Artifacts:
    if request.param == "file":
        return open_artifacts(Settings(artifacts_url=f"file://{tmp_path}/artifacts"))
    server: S3Server = request.getfixturevalue("s3_server")
    return open_artifacts(Settings(**_fields(server.env(f"unit-{uuid.uuid4().hex[:8]}"))))


def _fields(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("GRADSERVE_").lower(): v for k, v in env.items()}


def test_put_get_list_delete(store: Artifacts) -> None:
    small = store.put("t/jobs/j1/a.bin", b"hello")
    assert small == ArtifactRef("t/jobs/j1/a.bin", 5, hashlib.sha256(b"hello").hexdigest())
    assert store.get(small) == b"hello"
    # Streamed in chunks past one part: a multipart upload on S3, one staged file on disk.
    chunks = [bytes([i]) * (1024 * 1024) for i in range(9)]
    big = store.put("t/jobs/j1/big.bin", iter(chunks))
    assert big.size == 9 * 1024 * 1024 and big.sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert store.get(big) == b"".join(chunks)
    store.put("t/jobs/j2/b.bin", b"other job")
    assert store.size("t/jobs/j1/big.bin") == big.size and store.size("t/jobs/j1/none") is None
    assert sorted(item.key for item in store.list("t/jobs/j1/")) == ["t/jobs/j1/a.bin", "t/jobs/j1/big.bin"]
    assert store.delete_prefix("t/jobs/j1/") == 2
    assert [item.key for item in store.list("t/")] == ["t/jobs/j2/b.bin"]
    store.delete("t/jobs/j2/b.bin")
    store.delete("t/jobs/j2/b.bin")  # already gone: no error
    with pytest.raises(NotFound, match="gone from the store"):
        store.get(small)


def test_a_changed_object_is_refused(store: Artifacts) -> None:
    ref = store.put("t/datasets/d/data.safetensors", b"x" * 1000)
    obstore.put(store.store, ref.key, b"x" * 999 + b"y")  # same size, one byte differs
    with pytest.raises(ArtifactCorrupt, match="corrupt"):
        store.get(ref)
    obstore.put(store.store, ref.key, b"x" * 500)  # truncated
    with pytest.raises(ArtifactCorrupt, match="500 bytes"):
        store.get(ref)


def test_async_calls(store: Artifacts) -> None:
    async def go() -> None:
        ref = await store.put_async("t/jobs/j3/exports/onnx-5", b"model")
        assert await store.get_async(ref) == b"model"
        assert await store.delete_prefix_async("t/jobs/j3/") == 1

    asyncio.run(go())
    assert store.list("t/jobs/j3/") == []


def test_an_unreachable_store_is_unavailable_and_keys_stay_secret(
    s3_server: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**s3_server.env("down"), "GRADSERVE_S3_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens on 9
    store = open_artifacts(Settings(**_fields(env), artifacts_timeout_s=1.0))
    with caplog.at_level(logging.WARNING), pytest.raises(ArtifactUnavailable) as raised:
        store.put("t/jobs/j/x", b"data")
    assert raised.value.status == 503 and raised.value.extra["retry_after"] == 2
    said = str(raised.value) + caplog.text + repr(Settings(**_fields(env)))
    assert s3_server.secret_key not in said and s3_server.access_key not in said


def test_where_masks_a_user_part() -> None:
    assert where("s3://AKIA:secret@bucket/prefix") == "s3://***@bucket/prefix"
    assert where("file:///var/lib/gradserve") == "file:///var/lib/gradserve"
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        open_artifacts(Settings(artifacts_url="ftp://host/x"))
