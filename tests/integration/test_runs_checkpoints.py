"""Every checkpoint by step, retention, and exports that run locally with the checkpoint's outputs."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load as st_load

from models.nn.build import build_network
from models.spec.network import NetworkSpec
from tests.conftest import Service
from tests.integration.jobs_helpers import lenet_job, mlp_job, submit, wait_final
from tests.lenet import LENET_SPEC

pytestmark = pytest.mark.integration


def test_checkpoint_by_step_equals_the_run_stopped_there(client: httpx.Client) -> None:
    long_id = submit(client, mlp_job(steps=40, capture={"checkpoint_every": 10}))
    short_id = submit(client, mlp_job(steps=20, capture={"checkpoint_every": 10}))
    assert wait_final(client, long_id)["status"] == wait_final(client, short_id)["status"] == "succeeded"
    listed = client.get(f"/v1/jobs/{long_id}/checkpoints").json()
    assert [c["step"] for c in listed["data"]] == [10, 20, 30, 40] and listed["total"] == 4
    assert all(c["bytes"] > 0 and c["time"] > 0 for c in listed["data"])
    at_20 = client.get(f"/v1/jobs/{long_id}/checkpoint", params={"step": 20})
    assert at_20.headers["x-checkpoint-step"] == "20"
    stopped = st_load(client.get(f"/v1/jobs/{short_id}/checkpoint").content)
    mid = st_load(at_20.content)
    assert mid.keys() == stopped.keys() and all(torch.equal(mid[k], stopped[k]) for k in mid)
    final = st_load(client.get(f"/v1/jobs/{long_id}/checkpoint", params={"step": 40}).content)
    assert not torch.equal(final["fc1.weight"], mid["fc1.weight"])
    missing = client.get(f"/v1/jobs/{long_id}/checkpoint", params={"step": 15})
    assert missing.status_code == 404 and "10, 20, 30, 40" in missing.json()["detail"]


def test_retention_keeps_the_last_ten(client: httpx.Client) -> None:
    job_id = submit(client, mlp_job(steps=14, capture={"checkpoint_every": 1}))
    wait_final(client, job_id)
    steps = [c["step"] for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]]
    assert steps == list(range(5, 15))  # GRADSERVE_CHECKPOINT_KEEP_LAST=10
    assert client.get(f"/v1/jobs/{job_id}/checkpoint", params={"step": 4}).status_code == 404


def test_exports_run_locally_with_the_checkpoint_outputs(
    service: Service, client: httpx.Client, client_bob: httpx.Client
) -> None:
    job_id = submit(client, lenet_job(steps=30, capture={"checkpoint_every": 10, "graph": False}))
    assert wait_final(client, job_id)["status"] == "succeeded"
    weights = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint", params={"step": 20}).content)
    net = build_network(NetworkSpec.model_validate(LENET_SPEC))
    net.load_state_dict(weights)
    net.eval()
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x)

    session_workers, exported_by = {w["name"] for w in service.workers("sessions")}, []

    def export(fmt: str) -> bytes:
        response = client.get(f"/v1/jobs/{job_id}/export", params={"format": fmt, "step": 20}, timeout=300)
        assert response.status_code == 200, response.text
        assert response.headers["x-checkpoint-step"] == "20"
        # made by a session worker, not in the API process (which then never loads torch.onnx's exporter)
        assert response.headers["x-exported-by"] in session_workers, (response.headers, session_workers)
        exported_by.append(response.headers["x-exported-by"])
        return response.content

    scripted = torch.jit.load(io.BytesIO(export("torchscript")))
    assert torch.equal(scripted(x), expected)
    program = torch.export.load(io.BytesIO(export("pt2"))).module()
    assert torch.equal(program(x), expected)
    export_onnx = export("onnx")
    session = onnxruntime.InferenceSession(export_onnx)
    (out,) = session.run(None, {"input": x.numpy()})
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)  # onnxruntime's own kernels
    bad = client.get(f"/v1/jobs/{job_id}/export", params={"format": "keras"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "format"]
    assert client.get(f"/v1/jobs/{job_id}/export", params={"format": "onnx", "step": 5}).status_code == 404
    # The onnx package's C extension is mapped into the worker that made the file, never into the API process.
    maker = next(w for w in service.workers("sessions") if w["name"] == exported_by[-1])
    assert _maps_onnx(maker["pid"])
    api = [
        pid
        for pid in _pids()
        if _cmdline(pid)[1:4] == ["-m", "launcher", "api"] and service.url.endswith(_cmdline(pid)[-1])
    ]
    assert len(api) == 1 and not _maps_onnx(api[0]), api
    kept = client.get(f"/v1/jobs/{job_id}/export", params={"format": "onnx", "step": 20})
    assert kept.content == export_onnx and "x-exported-by" not in kept.headers  # served from the artifact store
    foreign = client_bob.get(f"/v1/jobs/{job_id}/export", params={"format": "onnx", "step": 20})
    assert foreign.status_code == 404, foreign.text  # another tenant's job does not exist for bob


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:  # gone meanwhile
        return []


def _maps_onnx(pid: int) -> bool:
    """Whether the process has onnx's C extension loaded (what ``import onnx``, and so torch.onnx.export, loads)."""
    return "onnx_cpp2py_export" in Path(f"/proc/{pid}/maps").read_text()
