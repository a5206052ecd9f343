"""What one client could do to everyone: upload a zip member that inflates to gigabytes or a file of
countless tensors."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import httpx
import numpy as np
import pytest

from models.wire.session import OCTET
from models.wire.tensors import MAX_SAFETENSORS_TENSORS
from tests.lenet import LENET_SPEC

pytestmark = pytest.mark.integration


def test_a_bzip2_bomb_in_an_npz_is_a_413(client: httpx.Client) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (3,)})
    targets = io.BytesIO()
    np.save(targets, np.zeros(3))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("inputs.npy", header.getvalue() + bytes(8 * 2**20))  # 24 bytes declared
        archive.writestr("targets.npy", targets.getvalue())
    assert len(buf.getvalue()) < 2000  # bzip2 packed 8 MB of zeros
    response = client.post("/v1/datasets", content=buf.getvalue(), headers={"content-type": OCTET})
    assert response.status_code == 413, response.text
    assert "member 'inputs.npy' inflates past" in response.json()["detail"]


def test_countless_tensors_are_a_413_before_any_is_made(client: httpx.Client) -> None:
    session = client.post("/v1/sessions", json={"network": LENET_SPEC, "seed": 0, "device": "cpu"})
    assert session.status_code == 201, session.text
    count = MAX_SAFETENSORS_TENSORS + 1
    header = {f"inputs.t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(count)}
    raw = json.dumps(header).encode()
    blob = struct.pack("<Q", len(raw)) + raw + bytes(count)
    response = client.post(
        f"/v1/sessions/{session.json()['id']}/forward", content=blob, headers={"content-type": OCTET}
    )
    assert response.status_code == 413, response.text
    assert f"holds {count:,} tensors; the limit is {MAX_SAFETENSORS_TENSORS:,}" in response.json()["detail"]
    ok = client.post(f"/v1/sessions/{session.json()['id']}/forward", json={"input": {"zeros": [1, 1, 32, 32]}})
    assert ok.status_code == 200, ok.text
