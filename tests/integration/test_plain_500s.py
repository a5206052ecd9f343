"""Requests that were plain 500s: concurrent first exports, null fork changes, nesting past recursion."""

from __future__ import annotations

import io
import json
import struct
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load as st_load

from models.nn.build import build_network
from models.spec.network import NetworkSpec
from models.wire.session import OCTET
from models.wire.tensors import to_safetensors
from tests.conftest import Service
from tests.integration.jobs_helpers import MLP, mlp_job, submit, wait_final
from tests.lenet import LENET_SPEC

pytestmark = pytest.mark.integration
DEEP = "[" * 100_000 + "]" * 100_000


def _run(fmt: str, blob: bytes, x: torch.Tensor) -> torch.Tensor:
    if fmt == "torchscript":
        return torch.jit.load(io.BytesIO(blob))(x)
    if fmt == "pt2":
        return torch.export.load(io.BytesIO(blob)).module()(x)
    (out,) = onnxruntime.InferenceSession(blob).run(None, {"input": x.numpy()})
    return torch.from_numpy(out)


def test_concurrent_first_exports_all_succeed_with_the_checkpoints_outputs(
    service: Service, client: httpx.Client
) -> None:
    job_id = submit(client, mlp_job(steps=20, capture={"checkpoint_every": 10, "graph": False}))
    assert wait_final(client, job_id)["status"] == "succeeded"
    asked = [("torchscript", 10), ("pt2", 10), ("onnx", 10), ("torchscript", 20), ("pt2", 10)]

    def export(fmt_step: tuple[str, int]) -> httpx.Response:
        fmt, step = fmt_step
        with service.client() as own:  # each its own connection: all in flight at once
            return own.get(f"/v1/jobs/{job_id}/export", params={"format": fmt, "step": step}, timeout=600)

    with ThreadPoolExecutor(len(asked)) as pool:
        answers = list(pool.map(export, asked))
    assert [a.status_code for a in answers] == [200] * len(asked), [a.text[:200] for a in answers]
    assert answers[1].content == answers[4].content  # the second asker of pt2@10 got the file the first made
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    for (fmt, step), answer in zip(asked, answers, strict=True):
        net = build_network(NetworkSpec.model_validate(MLP))
        net.load_state_dict(st_load(client.get(f"/v1/jobs/{job_id}/checkpoint", params={"step": step}).content))
        with torch.no_grad():
            expected, got = net.eval()(x), _run(fmt, answer.content, x)
        if fmt == "onnx":  # onnxruntime's own kernels
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
        else:
            assert torch.equal(got, expected), (fmt, step)
        again = client.get(f"/v1/jobs/{job_id}/export", params={"format": fmt, "step": step})
        assert again.content == answer.content  # what a serial request gets: the file kept


@pytest.mark.parametrize("field", ["epochs", "steps", "lr", "optimizer", "dataset", "tags"])
def test_a_null_fork_change_is_a_422_naming_it(client: httpx.Client, field: str, fork_parent: str) -> None:
    response = client.post(f"/v1/jobs/{fork_parent}/fork", json={"step": 10, "changes": {field: None}})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "changes", field] and "cannot be null" in detail["msg"]


@pytest.fixture(scope="module")
def fork_parent(service: Service) -> str:
    with service.client() as c:
        job_id = submit(c, mlp_job(steps=20, capture={"checkpoint_every": 10, "graph": False}))
        assert wait_final(c, job_id)["status"] == "succeeded"
    return job_id


def test_nulls_that_mean_remove_still_fork(client: httpx.Client, fork_parent: str) -> None:
    changes = {"lr_scheduler": None, "clip_grad_norm": None, "name": None, "epochs": 8}
    response = client.post(f"/v1/jobs/{fork_parent}/fork", json={"step": 10, "changes": changes})
    assert response.status_code == 202, response.text
    assert wait_final(client, response.json()["id"])["status"] == "succeeded"


def test_nesting_past_recursion_is_a_4xx_naming_the_part(client: httpx.Client) -> None:
    header = ('{"__metadata__": {"x": ' + "[" * 20_000 + "]" * 20_000 + "}}").encode()
    dataset = client.post(
        "/v1/datasets", content=struct.pack("<Q", len(header)) + header, headers={"content-type": OCTET}
    )
    assert dataset.status_code == 422, dataset.text
    assert "safetensors" in json.dumps(dataset.json()["detail"])
    session = client.post("/v1/sessions", json={"network": LENET_SPEC, "seed": 0, "device": "cpu"})
    assert session.status_code == 201, session.text
    deep = to_safetensors({"input": torch.zeros(1, 1, 32, 32)}, {"args": DEEP})
    forward = client.post(f"/v1/sessions/{session.json()['id']}/forward", content=deep, headers={"content-type": OCTET})
    assert forward.status_code == 422, forward.text
    assert forward.json()["detail"][0]["loc"] == ["body", "__metadata__", "args"]
