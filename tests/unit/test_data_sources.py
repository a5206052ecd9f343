"""Datasets by reference, resolved without a stack: file:// only under GRADSERVE_DATA_DIRS (no ``..``, no link
out), s3:// only with the registering tenant's own keys, and keys that show in no message or repr."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from models.data.credentials import parse_credentials
from models.data.sources import copy_to, credentials_for, resolve
from models.errors import InvalidInput, PayloadTooLarge
from models.settings import Settings

LOC = ("body", "url")
CREDS = {
    "alice": {"access_key_id": "AKIAALICE", "secret_access_key": "alice-secret-0123"},
    "bob": {"access_key_id": "AKIABOB", "secret_access_key": "bob-secret-4567", "endpoint": "http://minio:9000"},
}


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        data_dirs=f"{tmp_path / 'allowed'}, {tmp_path / 'also'}", data_credentials=json.dumps(CREDS), **extra
    )


def test_file_urls_only_under_the_allowed_directories(tmp_path: Path) -> None:
    (tmp_path / "allowed" / "sub").mkdir(parents=True)
    (tmp_path / "allowed" / "sub" / "d.npz").write_bytes(b"data")
    (tmp_path / "secret.npz").write_bytes(b"not yours")
    (tmp_path / "allowed" / "out.npz").symlink_to(tmp_path / "secret.npz")
    (tmp_path / "allowed" / "in.parquet").symlink_to(tmp_path / "allowed" / "sub" / "d.npz")
    settings = _settings(tmp_path)
    ref = resolve(f"file://{tmp_path}/allowed/sub/d.npz", None, tenant="alice", settings=settings, loc=LOC)
    assert ref.path == tmp_path / "allowed" / "sub" / "d.npz" and ref.format == "npz"
    linked = resolve(f"file://{tmp_path}/allowed/in.parquet", None, tenant="bob", settings=settings, loc=LOC)
    assert linked.path == ref.path and linked.format == "parquet"  # a link that stays inside is followed
    for url in (
        f"file://{tmp_path}/secret.npz",
        f"file://{tmp_path}/allowed/../secret.npz",
        f"file://{tmp_path}/allowed/out.npz",
        f"file://{tmp_path}/allowedx/d.npz",
        f"file://elsewhere{tmp_path}/allowed/sub/d.npz",
    ):
        with pytest.raises(InvalidInput, match="GRADSERVE_DATA_DIRS") as err:
            resolve(url, None, tenant="alice", settings=settings, loc=LOC)
        assert url in err.value.msg and err.value.loc == LOC
    with pytest.raises(InvalidInput, match=r"is empty\)"):
        resolve(f"file://{ref.path}", None, tenant="alice", settings=Settings(), loc=LOC)
    with pytest.raises(InvalidInput, match="not a file"):
        resolve(f"file://{tmp_path}/allowed/sub.npz", "npz", tenant="alice", settings=settings, loc=LOC)


def test_each_tenant_reads_with_its_own_keys_and_they_never_show(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert credentials_for("alice", settings, LOC).access_key_id == "AKIAALICE"
    assert credentials_for("bob", settings, LOC).secret_access_key == "bob-secret-4567"
    with pytest.raises(InvalidInput, match="tenant 'carol' has no credentials"):
        resolve("s3://bucket/x.parquet", None, tenant="carol", settings=settings, loc=LOC)
    with pytest.raises(InvalidInput, match="carries no credentials"):
        resolve("s3://AKIAALICE:alice-secret-0123@bucket/x.parquet", None, tenant="alice", settings=settings, loc=LOC)
    with pytest.raises(InvalidInput, match="format"):
        resolve("s3://bucket/x.csv", None, tenant="alice", settings=settings, loc=LOC)
    assert resolve("s3://bucket/a/x", "tar", tenant="alice", settings=settings, loc=LOC).key == "a/x"
    shown = repr(settings) + repr(parse_credentials(json.dumps(CREDS)))
    for entry in CREDS.values():
        assert entry["secret_access_key"] not in shown and entry["access_key_id"] not in shown
    with pytest.raises(ValueError, match=r"\['bob'\] needs") as err:
        parse_credentials(json.dumps({"bob": {"access_key_id": "AKIABOB"}}))
    assert "AKIABOB" not in str(err.value)


def test_a_reference_past_the_upload_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "big.npz").write_bytes(b"x" * 5000)
    settings = _settings(tmp_path, max_upload_bytes=4096)
    ref = resolve(f"file://{tmp_path}/allowed/big.npz", None, tenant="alice", settings=settings, loc=LOC)
    with pytest.raises(PayloadTooLarge, match="GRADSERVE_MAX_UPLOAD_BYTES"):
        copy_to(ref, io.BytesIO(), tenant="alice", settings=settings, loc=LOC)
