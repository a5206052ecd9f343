"""Decoded sizes of uploads read from headers alone: a lying header is refused before any allocation."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save

from models.data.arrays import parse_dataset
from models.errors import InvalidInput, PayloadTooLarge
from models.settings import Settings
from models.wire.file_headers import npz_decoded_bytes, safetensors_decoded_bytes


def _npz_claiming(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """An .npz whose 'inputs' member's header claims ``shape`` but holds only a few bytes of data."""
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": descr, "fortran_order": False, "shape": shape})
    member.write(b"\0" * 64)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("inputs.npy", member.getvalue())
        targets = io.BytesIO()
        np.save(targets, np.zeros(3))
        archive.writestr("targets.npy", targets.getvalue())
    return buf.getvalue()


def test_npz_header_claiming_a_huge_array_is_413_with_both_sizes() -> None:
    blob = _npz_claiming((10**6, 10**6))
    assert npz_decoded_bytes(blob, loc=("body",))["inputs"] == 8 * 10**12
    with pytest.raises(PayloadTooLarge) as err:
        parse_dataset(blob, Settings())
    assert "8,000,000,000,000" in err.value.msg and f"{Settings().max_dataset_bytes:,}" in err.value.msg


def test_npz_sizes_count_widened_integers() -> None:
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((4, 3), dtype=np.int16), targets=np.zeros(4, dtype=np.uint16))
    assert npz_decoded_bytes(buf.getvalue(), loc=()) == {"inputs": 4 * 3 * 4, "targets": 4 * 8}


def test_npz_header_that_lies_small_is_a_422_not_a_crash() -> None:
    with pytest.raises(InvalidInput):
        parse_dataset(_npz_claiming((1000, 10)), Settings())


def test_safetensors_header_sizes_and_a_huge_claim() -> None:
    blob = save({"inputs": torch.zeros(5, 2), "targets": torch.zeros(5, dtype=torch.int64)})
    assert safetensors_decoded_bytes(blob, loc=()) == {"inputs": 40, "targets": 40}
    header = json.dumps({"inputs": {"dtype": "F64", "shape": [10**6, 10**6], "data_offsets": [0, 8]}}).encode()
    lying = struct.pack("<Q", len(header)) + header + b"\0" * 8
    with pytest.raises(PayloadTooLarge, match="8,000,000,000,000"):
        parse_dataset(lying, Settings())
    with pytest.raises(InvalidInput, match="header claims"):
        safetensors_decoded_bytes(struct.pack("<Q", 2**62) + b"{}", loc=())
