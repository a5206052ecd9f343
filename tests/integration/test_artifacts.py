"""Blobs in the artifact store, on a stack pointed at an S3-compatible server (moto's, started by the tests):
the same job trains to the same weights as on the default file store, Redis keeps only small records, tenants
stay apart, keys never show, deletes free the bytes, and a store outage mid-checkpoint is 503s and a failed
attempt, then a resume that equals an undisturbed run."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
import redis
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from models.settings import Settings
from models.store.artifact_sweep import sweep_once
from models.store.artifacts import open_artifacts
from models.store.keys import Keys
from tests.conftest import S3Server, Service, running_service
from tests.integration.jobs_helpers import lenet_job, mlp_job, sse, submit, wait_final, wait_until

pytestmark = pytest.mark.integration
PREFIX = "it"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Service]:
    env: dict[str, str | None] = {**s3_server.env(PREFIX), "GRADSERVE_ARTIFACTS_TIMEOUT_S": "1"}
    with running_service(tmp_path_factory.mktemp("s3stack"), workers=1, session_workers=1, extra_env=env) as svc:
        yield svc


def _objects(server: S3Server, prefix: str) -> dict[str, int]:
    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )
    got = s3.list_objects_v2(Bucket=server.bucket, Prefix=f"{PREFIX}/{prefix}").get("Contents", [])
    return {o["Key"].removeprefix(f"{PREFIX}/"): o["Size"] for o in got}


def _weights(client: httpx.Client, job_id: str) -> dict[str, torch.Tensor]:
    response = client.get(f"/v1/jobs/{job_id}/checkpoint")
    assert response.status_code == 200, response.text
    return st_load(response.content)


def _upload(client: httpx.Client, blob: bytes) -> str:
    response = client.post("/v1/datasets", content=blob, headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_a_job_on_s3_keeps_blobs_out_of_redis(s3_stack: Service, s3_server: S3Server, client: httpx.Client) -> None:
    g = torch.Generator().manual_seed(0)
    n = 560_000  # (6 + 3) float32 a sample: a 20 MB dataset
    blob = st_save({"inputs": torch.randn(n, 6, generator=g), "targets": torch.randn(n, 3, generator=g)})
    assert len(blob) > 20_000_000
    with s3_stack.client("alice") as alice, s3_stack.client("bob") as bob:
        data_id = _upload(alice, blob)
        body = mlp_job(dataset={"source": "upload", "id": data_id}, steps=50, capture={"checkpoint_every": 10})
        job_id = submit(alice, body)
        on_file = submit(client, {**body, "dataset": {"source": "upload", "id": _upload(client, blob)}})
        assert wait_final(alice, job_id)["status"] == wait_final(client, on_file)["status"] == "succeeded"
        mine, theirs = _weights(alice, job_id), _weights(client, on_file)
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
        kept = alice.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]
        assert [c["step"] for c in kept] == [10, 20, 30, 40, 50] and "key" not in kept[0]
        stored = _objects(s3_server, f"alice/jobs/{job_id}/ckpt/")
        assert sorted(stored.values()) == sorted(c["bytes"] for c in kept)
        assert list(_objects(s3_server, f"alice/datasets/{data_id}/").values()) == [len(blob)]
        export = alice.get(f"/v1/jobs/{job_id}/export", params={"format": "torchscript"})
        assert export.status_code == 200 and len(_objects(s3_server, f"alice/jobs/{job_id}/exports/")) == 1
        assert alice.get(f"/v1/jobs/{job_id}/export", params={"format": "torchscript"}).content == export.content

        with redis.Redis.from_url(s3_stack.redis_url) as r:
            sizes = {key: r.memory_usage(key) or 0 for key in r.scan_iter(count=1000)}
        biggest = max(sizes, key=lambda k: sizes[k])
        assert sizes[biggest] < MiB, f"{biggest!r} holds {sizes[biggest]:,} bytes"

        # Another tenant reads none of it.
        assert bob.get(f"/v1/datasets/{data_id}").status_code == 404
        assert bob.get(f"/v1/jobs/{job_id}/checkpoint", params={"step": 10}).status_code == 404
        assert bob.get(f"/v1/jobs/{job_id}/export", params={"format": "torchscript"}).status_code == 404
        refused = bob.post("/v1/jobs", json={**body, "dataset": {"source": "upload", "id": data_id}})
        assert refused.status_code == 404

        # Deleting frees the bytes, and the usage says so.
        before = alice.get("/v1/usage").json()
        assert before["datasets"]["bytes"] >= len(blob)
        assert alice.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert alice.delete(f"/v1/datasets/{data_id}").status_code == 204
        assert _objects(s3_server, f"alice/jobs/{job_id}/") == {} == _objects(s3_server, f"alice/datasets/{data_id}/")
        after = alice.get("/v1/usage").json()
        assert after["datasets"] == {"count": 0, "bytes": 0}
        assert after["jobs"]["count"] == before["jobs"]["count"] - 1

    said = s3_stack.log.read_text()
    assert s3_server.secret_key not in said and s3_server.access_key not in said


def test_expired_records_leave_nothing_behind(s3_stack: Service, s3_server: S3Server) -> None:
    """A dataset whose Redis record expired: the sweep (which the workers run every interval) deletes its file."""
    with s3_stack.client("bob") as bob:
        data_id = _upload(bob, st_save({"inputs": torch.zeros(4, 6), "targets": torch.zeros(4, 3)}))
    assert len(_objects(s3_server, f"bob/datasets/{data_id}/")) == 1
    keys = Keys()
    with redis.Redis.from_url(s3_stack.redis_url) as r:
        r.delete(keys.dataset("bob", data_id))  # as its TTL would
        settings = Settings(**{k.removeprefix("GRADSERVE_").lower(): v for k, v in s3_server.env(PREFIX).items()})
        gone = sweep_once(r, keys, open_artifacts(settings), grace_s=0)
    assert f"bob/datasets/{data_id}/data.safetensors" in gone
    assert _objects(s3_server, f"bob/datasets/{data_id}/") == {}


def test_store_outage_mid_checkpoint(s3_stack: Service, s3_server: S3Server, client: httpx.Client) -> None:
    body = lenet_job(steps=1500, capture={"checkpoint_every": 100})
    undisturbed = submit(client, body)
    with s3_stack.client("alice") as alice:
        job_id = submit(alice, body)
        wait_until(alice, job_id, lambda d: (d.get("checkpoint_step") or 0) >= 100, timeout=120)
        s3_server.stop()
        try:
            down = alice.post("/v1/datasets", content=st_save({"inputs": torch.zeros(2, 1), "targets": torch.zeros(2)}))
            assert down.status_code == 503 and down.headers["retry-after"] == "2", down.text
            assert "artifact store" in down.json()["detail"]
            assert alice.get(f"/v1/jobs/{job_id}/checkpoint").status_code == 503
            failed = _wait_event(alice, job_id, "attempt_failed")
            assert "could not write" in failed["attempt_failed"] and failed["resumes_from"] >= 100
        finally:
            s3_server.start()
        assert wait_final(alice, job_id, timeout=240)["status"] == "succeeded"
        assert wait_final(client, undisturbed)["status"] == "succeeded"
        doc = alice.get(f"/v1/jobs/{job_id}").json()
        assert doc["attempt"] >= 2
        mine, theirs = _weights(alice, job_id), _weights(client, undisturbed)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
        upload = alice.post("/v1/datasets", content=st_save({"inputs": torch.zeros(2, 1), "targets": torch.zeros(2)}))
        assert upload.status_code == 201


def _wait_event(client: httpx.Client, job_id: str, field: str, timeout: float = 60) -> dict[str, Any]:
    """The first event of the job whose data carries ``field``."""
    deadline = time.monotonic() + timeout
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
        for event in sse(response):
            data = json.loads(event["data"])
            if isinstance(data, dict) and field in data:
                return data
            assert time.monotonic() < deadline, f"no event with {field} within {timeout} s"
    raise AssertionError(f"the event stream ended without {field}")
