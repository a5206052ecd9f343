"""Uploaded datasets: safetensors and .npz (never pickle), checked against the network at submit time."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from tests.conftest import detail_of
from tests.integration.jobs_helpers import mlp_job, submit, wait_final


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_upload_npz_and_train(client: httpx.Client) -> None:
    rng = np.random.default_rng(0)
    blob = _npz(
        inputs=rng.normal(size=(30, 6)),
        targets=rng.integers(0, 3, size=30),
        test_inputs=rng.normal(size=(9, 6)),
        test_targets=rng.integers(0, 3, size=9),
    )
    uploaded = client.post("/v1/datasets", content=blob, headers={"content-type": "application/octet-stream"})
    assert uploaded.status_code == 201, uploaded.text
    meta = uploaded.json()
    assert meta["format"] == "npz" and meta["num_samples"] == 30
    assert meta["arrays"]["inputs"] == {"shape": [30, 6], "dtype": "float64", "integral": False}
    assert meta["arrays"]["targets"] == {"shape": [30], "dtype": "int64", "integral": True, "min": 0, "max": 2}
    assert client.get(f"/v1/datasets/{meta['id']}").json() == meta
    body = mlp_job(dataset={"source": "upload", "id": meta["id"]}, criterion={"type": "CrossEntropyLoss"}, steps=8)
    job = wait_final(client, submit(client, body))
    assert job["status"] == "succeeded" and job["val_accuracy"] is not None


def test_upload_safetensors_multipart_and_mismatch(client: httpx.Client, client_bob: httpx.Client) -> None:
    blob = st_save({"inputs": torch.randn(12, 5), "targets": torch.randn(12, 3)})
    uploaded = client.post("/v1/datasets", files={"file": ("d.safetensors", blob)})
    assert uploaded.status_code == 201, uploaded.text
    data_id = uploaded.json()["id"]
    wrong = client.post("/v1/jobs", json=mlp_job(dataset={"source": "upload", "id": data_id}))
    assert wrong.status_code == 422 and detail_of(wrong)["loc"] == ["body", "dataset", "id"]
    assert "[N, 6]" in detail_of(wrong)["msg"]
    assert client_bob.post("/v1/jobs", json=mlp_job(dataset={"source": "upload", "id": data_id})).status_code == 404


@pytest.mark.parametrize(
    ("blob", "needle"),
    [
        (_npz(inputs=np.array([{"a": 1}] * 3, dtype=object), targets=np.zeros(3)), "object arrays are refused"),
        (_npz(inputs=np.zeros((3, 6))), "targets"),
        (_npz(inputs=np.zeros((3, 6)), targets=np.zeros(4)), "same"),
        (b"not a dataset at all", "safetensors"),
    ],
)
def test_bad_uploads_are_422(client: httpx.Client, blob: bytes, needle: str) -> None:
    response = client.post("/v1/datasets", content=blob)
    assert response.status_code == 422, response.text
    assert needle in detail_of(response)["msg"]
