"""The artifact store's streamed writes (an upload in parts): sha256 and size computed on the way, a 413 as soon
as the stream passes its limit with nothing left behind, on both backends; and the chunked check of a streamed
.npz agreeing with the whole-file one."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from models.data.arrays import parse_arrays
from models.data.npz_scan import scan_npz
from models.errors import InvalidInput, PayloadTooLarge
from models.store.artifacts import PART_BYTES, Artifacts
from models.wire.tensors import describe_array
from tests.unit.test_artifacts import store  # noqa: F401  (the two-backend fixture)

MiB = 1024 * 1024


async def _pieces(n: int, size: int) -> AsyncIterator[bytes]:
    for i in range(n):
        yield bytes([i % 251]) * size


def _too_large(seen: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"passed the limit at {seen:,}")


def test_a_stream_is_stored_in_parts_with_its_hash(store: Artifacts) -> None:  # noqa: F811
    n, size = 5, 3 * MiB  # 15 MiB: two 8 MiB parts on S3
    copy = io.BytesIO()
    ref = asyncio.run(
        store.put_stream_async(
            "t/data/streamed", _pieces(n, size), max_bytes=n * size, too_large=_too_large, tee=copy.write
        )
    )
    expected = b"".join(bytes([i % 251]) * size for i in range(n))
    assert n * size > PART_BYTES
    assert (ref.size, ref.sha256) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert store.get(ref) == expected and copy.getvalue() == expected


def test_a_stream_past_its_limit_is_refused_midway_and_leaves_nothing(store: Artifacts, tmp_path: Path) -> None:  # noqa: F811
    consumed = []

    async def counted() -> AsyncIterator[bytes]:
        async for piece in _pieces(100, MiB):
            consumed.append(len(piece))
            yield piece

    with pytest.raises(PayloadTooLarge, match="at 12,582,912"):
        asyncio.run(store.put_stream_async("t/data/big", counted(), max_bytes=12 * MiB - 1, too_large=_too_large))
    assert len(consumed) == 12  # refused at the piece that passed the limit, not after reading all 100
    assert store.list("t/") == []
    if store.where.startswith("file://"):  # no staging file either
        root = Path(store.where.removeprefix("file://"))
        assert [f for _, _, files in os.walk(root) for f in files] == []


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, **arrays)
    return path


def test_the_chunked_npz_check_agrees_with_the_whole_file_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("models.data.npz_scan.CHUNK_BYTES", 4096)  # many chunks per array
    rng = np.random.default_rng(0)
    path = _npz(
        tmp_path,
        inputs=rng.standard_normal((3000, 7)).astype(np.float32),
        targets=rng.integers(-3, 9, 3000).astype(np.int16),
        test_inputs=np.arange(40, dtype=np.uint16).reshape(20, 2),
        test_targets=np.ones(20, dtype=np.float64),
    )
    found = scan_npz(path, max_bytes=10**9, max_elements=10**9)
    _, tensors = parse_arrays(path.read_bytes(), max_bytes=10**9, max_elements=10**9)
    assert found == {"num_samples": 3000, "arrays": {k: describe_array(t) for k, t in tensors.items()}}


def test_the_chunked_npz_check_refuses_what_the_whole_one_does(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="above the int64 range"):
        scan_npz(
            _npz(tmp_path, inputs=np.zeros((2, 1)), targets=np.array([1, 2**63], dtype=np.uint64)),
            max_bytes=10**9,
            max_elements=10**9,
        )
    with pytest.raises(InvalidInput, match="same non-zero number of rows"):
        scan_npz(_npz(tmp_path, inputs=np.zeros((3, 1)), targets=np.zeros(2)), max_bytes=10**9, max_elements=10**9)
    with pytest.raises(PayloadTooLarge, match="GRADSERVE_MAX_DATASET_BYTES"):
        scan_npz(
            _npz(tmp_path, inputs=np.zeros((300, 10)), targets=np.zeros(300)), max_bytes=10_000, max_elements=10**9
        )
    with pytest.raises(InvalidInput, match="unexpected arrays 'x'"):
        scan_npz(_npz(tmp_path, x=np.zeros(3)), max_bytes=10**9, max_elements=10**9)
