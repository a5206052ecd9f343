"""Uploads built to exhaust the API: nesting that recursed, tensor counts that cost seconds, a zip member
that inflates to gigabytes. Each is a 4xx naming the part, at a bounded cost."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from models.data.arrays import parse_dataset
from models.errors import InvalidInput, PayloadTooLarge
from models.settings import Settings
from models.wire.file_headers import npz_decoded_bytes
from models.wire.session import read_binary_body
from models.wire.tensors import MAX_SAFETENSORS_TENSORS, from_safetensors, to_safetensors
from models.wire.zip_members import member_bytes

DEEP = "[" * 100_000 + "]" * 100_000
NESTED = "[" * 20_000 + "]" * 20_000  # under a dataset header's cap, far over json's recursion limit


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _many_tensors(count: int) -> bytes:
    header = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(count)}
    return _safetensors(header, b"\0" * count)


def _padded_header(spaces: int) -> bytes:
    """A safetensors file whose header is long (and empty): its length alone is the test."""
    raw = b"{" + b" " * spaces + b"}"
    return struct.pack("<Q", len(raw)) + raw


def test_deeply_nested_header_of_a_dataset_is_a_422() -> None:
    raw = ('{"__metadata__": {"x": ' + NESTED + "}}").encode()
    with pytest.raises(InvalidInput, match="unreadable header") as err:
        parse_dataset(struct.pack("<Q", len(raw)) + raw, Settings())
    assert err.value.loc == ("body",)


def test_deeply_nested_args_of_a_binary_call_are_a_422_naming_args() -> None:
    blob = to_safetensors({"input": torch.zeros(1, 2)}, {"args": DEEP})
    with pytest.raises(InvalidInput, match="must be a JSON object") as err:
        read_binary_body(blob, ("input",))
    assert err.value.loc == ("body", "__metadata__", "args")


def test_too_many_tensors_are_refused_before_any_is_made() -> None:
    with pytest.raises(PayloadTooLarge, match=f"holds {MAX_SAFETENSORS_TENSORS + 1:,} tensors") as err:
        from_safetensors(_many_tensors(MAX_SAFETENSORS_TENSORS + 1), loc=("body", "input"))
    assert "body.input" in err.value.msg
    with pytest.raises(PayloadTooLarge, match="has a header of 5,000,002 bytes"):
        from_safetensors(_padded_header(5_000_000), loc=("body", "input"))
    assert len(from_safetensors(_many_tensors(100))) == 100


def test_a_dataset_of_many_arrays_is_refused_from_its_header() -> None:
    with pytest.raises(PayloadTooLarge, match="header has 100,002 bytes; the limit here is 65,536"):
        parse_dataset(_padded_header(100_000), Settings())
    with pytest.raises(InvalidInput, match="unexpected arrays 't0', 't1', 't10', 't11', 't12' and 95 more"):
        parse_dataset(_many_tensors(100), Settings())


def _bzip2_npz(extra: int) -> bytes:
    """An .npz whose bzip2'd 'inputs' member declares 3 float64s and holds ``extra`` zero bytes more."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (3,)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("inputs.npy", header.getvalue() + bytes(24 + extra))
        archive.writestr("targets.npy", _npy(np.zeros(3)))
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, arr)
    return out.getvalue()


BOMB = 32 * 2**20


@pytest.fixture(scope="module")
def bomb() -> bytes:
    blob = _bzip2_npz(BOMB)
    assert len(blob) < 2000  # 32 MB of zeros, bzip2'd
    return blob


def test_reading_an_npz_header_inflates_only_the_header(bomb: bytes) -> None:
    tracemalloc.start()
    try:
        sizes = npz_decoded_bytes(bomb, loc=("body",))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sizes == {"inputs": 24, "targets": 24}
    assert peak < BOMB // 8, f"{peak:,} bytes at the peak"


def test_a_member_inflating_past_its_header_is_a_413(bomb: bytes) -> None:
    with pytest.raises(PayloadTooLarge, match=r"member 'inputs\.npy' inflates past"):
        parse_dataset(bomb, Settings())
    with zipfile.ZipFile(io.BytesIO(bomb)) as archive:
        info = archive.getinfo("inputs.npy")
    assert len(member_bytes(bomb, info, BOMB + 1000, loc=())) == 128 + 24 + BOMB  # under a cap that fits: whole
