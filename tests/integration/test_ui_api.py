"""The API behind the dashboard: downsampled series, gradient history, TensorBoard export, /ui/ and /docs assets."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradserve.protocol import LOSS_FIELDS, MODULE_FIELDS, public_states
from tests.conftest import Service
from tests.integration.jobs_helpers import mlp_job, submit, wait_final

pytestmark = pytest.mark.integration
STEPS = 1500
DIGITS_MLP = {
    "name": "DigitsMLP",
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "flatten", "start_dim": 1},
        {"name": "fc1", "type": "Linear", "in_features": 64, "out_features": 16},
        {"type": "relu"},
        {"name": "fc2", "type": "Linear", "in_features": 16, "out_features": 10},
    ],
}


@pytest.fixture(scope="module")
def long_job(service: Service) -> dict[str, Any]:
    """One finished run of 1,500 steps on the digits (held-out evaluations at epoch ends) with three gradient
    snapshots, shared by the tests here."""
    body = mlp_job(
        network=DIGITS_MLP,
        dataset={"source": "digits"},
        criterion={"type": "CrossEntropyLoss"},
        batch_size=16,
        steps=STEPS,
        capture={"gradients_every": 500, "graph": False},
    )
    with service.client("alice") as c:
        job_id = submit(c, body)
        assert wait_final(c, job_id, timeout=240)["status"] == "succeeded"
        return {"id": job_id, "metrics": c.get(f"/v1/jobs/{job_id}/metrics").json()}


def test_series_is_downsampled_keeping_ends_and_extremes(client: httpx.Client, long_job: dict[str, Any]) -> None:
    job_id, full = long_job["id"], long_job["metrics"]
    body = client.get(f"/v1/jobs/{job_id}/series", params={"points": 100}).json()
    assert body["count"] == STEPS and body["points"] == len(body["step"]) <= 100
    assert body["step"][0] == 1 and body["step"][-1] == STEPS and body["last_step"] == STEPS
    assert body["step"] == sorted(body["step"])
    assert min(full["loss"]) in body["loss"] and max(full["loss"]) in body["loss"]
    by_step = dict(zip(full["step"], full["loss"], strict=True))
    assert all(by_step[s] == v for s, v in zip(body["step"], body["loss"], strict=True))  # values, not averages
    assert {len(body[c]) for c in ("epoch", "lr", "samples_per_s", "t")} == {body["points"]}
    whole = client.get(f"/v1/jobs/{job_id}/series", params={"points": 100_000}).json()
    assert whole["step"] == full["step"] and whole["loss"] == full["loss"]
    assert client.get(f"/v1/jobs/{job_id}/series", params={"points": 3}).status_code == 422


def test_gradient_history_matches_each_snapshot(client: httpx.Client, long_job: dict[str, Any]) -> None:
    job_id = long_job["id"]
    history = client.get(f"/v1/jobs/{job_id}/gradients/history").json()
    assert history["steps"] == [500, 1000, 1500]
    assert set(history["parameters"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    for i, step in enumerate(history["steps"]):
        snapshot = client.get(f"/v1/jobs/{job_id}/gradients", params={"step": step}).json()["parameters"]
        for name, stat in snapshot.items():
            column = history["parameters"][name]
            assert column["shape"] == stat["shape"]
            assert [column[k][i] for k in ("norm", "mean", "std", "min", "max")] == [
                stat[k] for k in ("norm", "mean", "std", "min", "max")
            ]


def test_tensorboard_archive_holds_every_steps_loss(
    service: Service, client: httpx.Client, long_job: dict[str, Any], tmp_path: Path
) -> None:
    job_id, metrics = long_job["id"], long_job["metrics"]
    response = client.get(f"/v1/jobs/{job_id}/tensorboard")
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    made_by, session_workers = response.headers["x-exported-by"], {w["name"] for w in service.workers("sessions")}
    assert made_by in session_workers, (made_by, session_workers)  # made on a session worker, not in the API
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        names = tar.getnames()
        assert len(names) == 1 and re.fullmatch(rf"{job_id}/events\.out\.tfevents\.\d+\.gradserve", names[0])
        tar.extractall(tmp_path, filter="data")
    acc = EventAccumulator(str(tmp_path / job_id), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == metrics["step"]
    assert [e.value for e in loss] == [np.float32(v) for v in metrics["loss"]]
    assert [e.value for e in acc.Scalars("train/lr")] == [np.float32(v) for v in metrics["lr"]]
    assert len(metrics["eval"]["step"]) > 10
    assert [e.step for e in acc.Scalars("eval/loss")] == metrics["eval"]["step"]
    assert [e.value for e in acc.Scalars("eval/accuracy")] == [np.float32(v) for v in metrics["eval"]["val_accuracy"]]
    assert len(acc.Scalars("train/accuracy")) == STEPS
    tags = acc.Tags()["histograms"]
    assert sorted(tags) == [f"gradients/{n}" for n in ("fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight")]
    weight = acc.Histograms("gradients/fc1.weight")
    assert [h.step for h in weight] == [500, 1000, 1500]
    assert all(h.histogram_value.num == 16 * 64 for h in weight)
    stats = client.get(f"/v1/jobs/{job_id}/gradients", params={"step": 1000}).json()["parameters"]["fc1.weight"]
    assert weight[1].histogram_value.min == pytest.approx(stats["min"], rel=1e-6)


def test_views_are_tenant_scoped(client_bob: httpx.Client, service: Service, long_job: dict[str, Any]) -> None:
    job_id = long_job["id"]
    for path in ("series", "gradients/history", "tensorboard"):
        assert client_bob.get(f"/v1/jobs/{job_id}/{path}").status_code == 404
        with service.client(None) as anonymous:
            assert anonymous.get(f"/v1/jobs/{job_id}/{path}").status_code == 401


def test_ui_and_docs_are_served_from_the_api(service: Service) -> None:
    with service.client(None) as c:  # the pages hold no data, so they need no key
        page = c.get("/ui/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text)
        assert any("uPlot.iife.min.js" in a for a in assets) and any("app.js" in a for a in assets)
        for asset in assets:
            assert c.get(asset).status_code == 200, asset
        assert c.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
        # The job states the page's script reads are the protocol's, as GET /protocol answers them (no key)
        served = c.get("/protocol").json()
        assert served["layers"] == sorted(MODULE_FIELDS) and served["losses"] == sorted(LOSS_FIELDS)
        states = {kind: {k: v for k, v in s.items() if v is not None} for kind, s in served["states"].items()}
        assert states == public_states()
        block = re.search(r'<script type="application/json" id="protocol">(.*?)</script>', page.text)
        assert block is not None and json.loads(block.group(1)) == {"states": public_states()}
        assert c.get("/ui/static/../../main.py").status_code == 404
        docs = c.get("/docs").text
        external = [u for u in re.findall(r'(?:src|href|url)\s*[=:]\s*["\']([^"\']+)', docs) if "//" in u]
        assert external == [], external
        for asset in re.findall(r"'(/ui/static/[^']+)'|\"(/ui/static/[^\"]+)\"", docs):
            assert c.get(asset[0] or asset[1]).status_code == 200
        assert c.get("/redoc").status_code == 404  # it would load its script from a CDN


def test_openapi_has_examples_and_the_bearer_scheme(service: Service) -> None:
    with service.client(None) as c:
        schema = c.get("/openapi.json").json()
    paths = schema["paths"]
    for call in ("forward", "loss", "backward"):
        body = paths[f"/v1/sessions/{{session_id}}/{call}"]["post"]["requestBody"]["content"]["application/json"]
        assert body["examples"], call
    upload = paths["/v1/datasets"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"] and "safetensors" in upload["description"]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, method in (("/v1/jobs", "post"), ("/v1/sessions/{session_id}/forward", "post")):
        headers = [p["name"] for p in paths[path][method]["parameters"] if p["in"] == "header"]
        assert "Idempotency-Key" in headers, (path, headers)
    assert "/ui/" not in paths and "/docs" not in paths
