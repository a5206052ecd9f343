"""What one client could do to everyone: make the API parse a body without a key, send a network spec of
millions of layers, upload a zip member that inflates to gigabytes or a file of countless tensors."""

from __future__ import annotations

import io
import json
import socket
import struct
import zipfile
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from models.wire.session import OCTET
from models.wire.tensors import MAX_SAFETENSORS_TENSORS
from tests.conftest import Service
from tests.integration.jobs_helpers import MLP, mlp_job
from tests.lenet import LENET_SPEC

pytestmark = pytest.mark.integration


def _raw_exchange(service: Service, head: bytes) -> bytes:
    """Send ``head`` alone (the body it announces never comes) and read until the server closes."""
    where = urlsplit(service.url)
    with socket.create_connection((where.hostname, where.port), timeout=60) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):  # a server that waits for the body times this out: a failure
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
    return answer


def test_without_a_key_the_body_is_never_read(service: Service) -> None:
    head = (
        b"POST /v1/networks HTTP/1.1\r\nHost: gradserve\r\nContent-Type: application/json\r\n"
        b"Content-Length: 27000000\r\n\r\n"
    )
    answer = _raw_exchange(service, head)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"missing API key" in answer


def test_a_spec_route_caps_its_body_on_its_own(client: httpx.Client) -> None:
    padded = json.dumps({**MLP, "name": "Big"}).encode()[:-1] + b" " * (2 * 2**20) + b"}"
    response = client.post("/v1/networks", content=padded, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["detail"] == "request body exceeds 1,048,576 bytes (GRADSERVE_MAX_SPEC_BODY_BYTES)"
    assert client.post("/v1/networks", json=MLP).status_code == 201


def test_a_million_layers_are_counted_before_any_is_read(client: httpx.Client) -> None:
    network = {**MLP, "layers": [{"type": "no_such_layer"}] * 300_000}
    response = client.post("/v1/jobs", json=mlp_job(network=network))
    assert response.status_code == 422, response.text[:500]
    (detail,) = response.json()["detail"]  # one error, not one per layer
    assert detail["loc"] == ["body", "network", "layers"]
    assert detail["msg"] == "300000 layers exceed the limit of 256 (GRADSERVE_MAX_LAYERS)"


def test_a_bzip2_bomb_in_an_npz_is_refused_unread(client: httpx.Client) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (3,)})
    targets = io.BytesIO()
    np.save(targets, np.zeros(3))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("inputs.npy", header.getvalue() + bytes(8 * 2**20))  # 24 bytes declared
        archive.writestr("targets.npy", targets.getvalue())
    assert len(buf.getvalue()) < 2000  # bzip2 packed 8 MB of zeros
    before = client.get("/v1/usage").json()
    response = client.post("/v1/datasets", content=buf.getvalue(), headers={"content-type": OCTET})
    assert response.status_code == 422, response.text  # numpy never writes bzip2: refused before inflating
    assert "member 'inputs.npy' is compressed by zip method 12 (bzip2)" in str(response.json()["detail"])
    assert client.get("/v1/usage").json() == before  # nothing of it stored


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
