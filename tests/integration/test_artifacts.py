"""Blobs in the artifact store, on a stack pointed at an S3-compatible server (moto's, started by the tests):
the same job trains to the same weights as on the default file store, Redis keeps only small records, tenants
stay apart, keys never show, deletes free the bytes, and a store outage mid-checkpoint is 503s and a failed
attempt, then a resume that equals an undisturbed run."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import gradserve
from models.settings import Settings
from models.store.artifact_sweep import sweep_once
from models.store.artifacts import open_artifacts
from models.store.keys import Keys
from tests.conftest import API_KEYS, S3Server, Service, running_service
from tests.integration.dataset_refs import DATA_KEY_ID, DATA_SECRET, UPLOAD_LIMIT, refs_env
from tests.integration.jobs_helpers import lenet_job, mlp_job, sse, submit, wait_final, wait_until
from tests.integration.test_dataset_formats import Linear, _job, _local

pytestmark = pytest.mark.integration
PREFIX = "it"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one directory the stack reads file:// datasets from."""
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server, data_dir: Path) -> Iterator[Service]:
    env: dict[str, str | None] = {
        **s3_server.env(PREFIX),
        "GRADSERVE_ARTIFACTS_TIMEOUT_S": "1",
        **refs_env(data_dir, s3_server),  # the streamed-upload and by-reference tests share this stack
    }
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


def _s3(server: S3Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )


OCTET = {"Content-Type": "application/octet-stream"}


def test_a_streamed_upload_past_the_old_body_limit_trains_as_a_local_loop(
    s3_stack: Service, s3_server: S3Server, tmp_path: Path
) -> None:
    """Past GRADSERVE_MAX_BODY_BYTES (32 MiB), streamed to S3 in parts, checked a chunk at a time; and a body
    past GRADSERVE_MAX_UPLOAD_BYTES, sent chunked, is a 413 that leaves no object behind."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1_000_000, 9)).astype(np.float32)
    y = rng.integers(0, 4, 1_000_000)
    buf = io.BytesIO()
    np.savez(buf, inputs=x, targets=y)
    blob = buf.getvalue()
    assert Settings().max_body_bytes < len(blob) < UPLOAD_LIMIT
    with s3_stack.client("alice") as alice:
        (tmp_path / "big.npz").write_bytes(blob)
        with gradserve.Client(s3_stack.url, api_key=API_KEYS["alice"]) as gs:
            data_id = gs.datasets.upload_file(tmp_path / "big.npz").id  # sent from the file a piece at a time
        meta = alice.get(f"/v1/datasets/{data_id}").json()
        assert meta["format"] == "npz" and meta["bytes"] == len(blob) and meta["num_samples"] == 1_000_000
        assert meta["arrays"]["targets"] == {
            "shape": [1_000_000],
            "dtype": "int64",
            "integral": True,
            "min": 0,
            "max": 3,
        }
        job_id = submit(alice, _job({"source": "upload", "id": data_id}, [9], 9, 4, 6))
        keyed = alice.post("/v1/datasets", content=blob, headers={"Idempotency-Key": "big", **OCTET})
        assert keyed.status_code == 413 and "send a larger dataset without the header" in keyed.text, keyed.text
        assert list(_objects(s3_server, f"alice/datasets/{data_id}/").values()) == [len(blob)]

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is found mid-stream
            for _ in range(UPLOAD_LIMIT // MiB + 8):
                yield b"\0" * MiB

        before = set(_objects(s3_server, "alice/datasets/"))
        try:
            refused = alice.post("/v1/datasets", content=chunked(), headers={"Content-Type": "application/x-tar"})
            assert refused.status_code == 413 and "GRADSERVE_MAX_UPLOAD_BYTES" in refused.text, refused.text
        except httpx.WriteError:
            pass  # the server answered and closed before the client finished sending
        assert set(_objects(s3_server, "alice/datasets/")) == before

        torch.manual_seed(5)
        local = _local(torch.from_numpy(x), torch.from_numpy(y), Linear(9, 4), 6, None)
        done = wait_final(alice, job_id)
        assert done["status"] == "succeeded", done.get("error")
        remote = st_load(alice.get(f"/v1/jobs/{job_id}/checkpoint").content)
        assert remote.keys() == local.keys() and all(torch.equal(remote[k], local[k]) for k in local)


def test_datasets_by_reference_on_s3_and_an_allowed_directory(
    s3_stack: Service, s3_server: S3Server, data_dir: Path, tmp_path: Path
) -> None:
    table = pa.table({"a": np.arange(20, dtype=np.float64) / 7, "b": np.ones(20), "label": np.arange(20) % 3})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _s3(s3_server).put_object(Bucket=s3_server.bucket, Key="refs/t.parquet", Body=sink.getvalue().to_pybytes())
    _s3(s3_server).put_object(Bucket=s3_server.bucket, Key="refs/changes.parquet", Body=sink.getvalue().to_pybytes())
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 5)).astype(np.float32), rng.integers(0, 2, 30)
    np.savez(data_dir / "local.npz", inputs=x, targets=y)
    s3_url = f"s3://{s3_server.bucket}/refs/t.parquet"
    answers = []
    with s3_stack.client("alice") as alice, s3_stack.client("bob") as bob:
        on_s3 = alice.post("/v1/datasets/references", json={"url": s3_url})
        with gradserve.Client(s3_stack.url, api_key=API_KEYS["alice"]) as gs:
            on_disk_id = gs.datasets.register(f"file://{data_dir}/local.npz").id  # the client's way in
        on_disk = alice.get(f"/v1/datasets/{on_disk_id}")

        async def upload_async() -> int:
            async with gradserve.AsyncClient(s3_stack.url, api_key=API_KEYS["alice"]) as client:
                return (await client.datasets.upload_file(data_dir / "local.npz")).num_samples

        assert asyncio.run(upload_async()) == 30
        changes = alice.post("/v1/datasets/references", json={"url": f"s3://{s3_server.bucket}/refs/changes.parquet"})
        answers += [on_s3, on_disk, changes]
        assert on_s3.status_code == changes.status_code == 201, on_s3.text
        assert on_disk.json()["format"] == "npz" and on_disk.json()["source"] == "url"
        assert on_s3.json()["source"] == "url" and on_s3.json()["url"] == s3_url
        assert on_s3.json()["features"] == ["a", "b"] and on_s3.json()["num_samples"] == 20
        s3_job = submit(alice, _job({"source": "upload", "id": on_s3.json()["id"]}, [2], 2, 3, 5))
        disk_job = submit(alice, _job({"source": "upload", "id": on_disk.json()["id"]}, [5], 5, 2, 5))
        _s3(s3_server).put_object(Bucket=s3_server.bucket, Key="refs/changes.parquet", Body=b"replaced")
        changed_job = submit(alice, _job({"source": "upload", "id": changes.json()["id"]}, [2], 2, 3, 1))

        # Refused, each a 422 naming the URL: outside the allowed directory, climbing out of it, a link out of it.
        outside = tmp_path / "outside.npz"
        np.savez(outside, inputs=x, targets=y)
        (data_dir / "link.npz").symlink_to(outside)
        for url in (f"file://{outside}", f"file://{data_dir}/../{outside.name}", f"file://{data_dir}/link.npz"):
            refused = alice.post("/v1/datasets/references", json={"url": url})
            answers.append(refused)
            assert refused.status_code == 422 and url in refused.text and "GRADSERVE_DATA_DIRS" in refused.text
        # bob has no keys of his own, and alice's are never lent to him; her datasets are not his.
        refused = bob.post("/v1/datasets/references", json={"url": s3_url})
        answers.append(refused)
        assert refused.status_code == 422 and "tenant 'bob' has no credentials" in refused.text, refused.text
        assert bob.get(f"/v1/datasets/{on_s3.json()['id']}").status_code == 404
        refused = bob.post("/v1/jobs", json=_job({"source": "upload", "id": on_s3.json()["id"]}, [2], 2, 3, 5))
        assert refused.status_code == 404

        columns = torch.tensor(np.stack([table["a"].to_numpy(), table["b"].to_numpy()], 1), dtype=torch.float32)
        torch.manual_seed(5)
        local_s3 = _local(columns, torch.from_numpy(table["label"].to_numpy().copy()), Linear(2, 3), 5, None)
        torch.manual_seed(5)
        local_disk = _local(torch.from_numpy(x), torch.from_numpy(y), Linear(5, 2), 5, None)
        for job_id, local in ((s3_job, local_s3), (disk_job, local_disk)):
            done = wait_final(alice, job_id)
            assert done["status"] == "succeeded", done.get("error")
            remote = st_load(alice.get(f"/v1/jobs/{job_id}/checkpoint").content)
            assert all(torch.equal(remote[k], local[k]) for k in local), job_id
        failed = wait_final(alice, changed_job)
        assert failed["status"] == "failed" and "changed since it was registered" in str(failed.get("error")), failed
        answers += [alice.get("/v1/datasets"), alice.get(f"/v1/jobs/{s3_job}")]
    said = s3_stack.log.read_text() + "".join(a.text for a in answers)
    assert DATA_SECRET not in said and DATA_KEY_ID not in said
