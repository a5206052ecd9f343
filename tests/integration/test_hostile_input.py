"""Bad or hostile input gets a 4xx that names the field, never a 500, a broken stream or a failed job.

Each case here was a 500 (or a late failure) before it was fixed; see each test's first comment.
"""

from __future__ import annotations

import io
import json
import time

import httpx
import numpy as np
import pytest

from tests.conftest import detail_of

MLP = {
    "name": "M",
    "input_shape": [4],
    "layers": [{"name": "fc", "type": "Linear", "in_features": 4, "out_features": 3}],
}
EMB = {
    "name": "E",
    "input_shape": [5],
    "input_dtype": "int64",
    "layers": [
        {"name": "emb", "type": "Embedding", "num_embeddings": 10, "embedding_dim": 3},
        {"type": "flatten", "start_dim": 1},
    ],
}
JOB = {
    "network": MLP,
    "criterion": {"type": "CrossEntropyLoss"},
    "optimizer": {"type": "SGD", "lr": 0.1},
    "batch_size": 2,
    "steps": 2,
    "device": "cpu",
}


def net(*layers: dict, input_shape: list[int] | None = None, **extra: object) -> dict:
    return {"name": "M", "input_shape": input_shape or [4], "layers": list(layers), **extra}


def finished_job(client: httpx.Client) -> str:
    """A tiny job run to its end, so that it holds no place in the tenant's concurrent-jobs quota."""
    jid = client.post("/v1/jobs", json={**JOB, "dataset": {"source": "random"}}).json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{jid}").json()["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    return jid


def assert_422(r: httpx.Response, loc: list, *words: str) -> dict:
    assert r.status_code == 422, r.text
    d = detail_of(r)
    assert d["loc"] == loc, d
    for word in words:
        assert word in d["msg"], d
    return d


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "M", "input_shape": [NaN], "layers": [{"type": "relu"}]}',
        b'{"name": "M", "input_shape": [4], "layers": [{"type": "elu", "alpha": Infinity}]}',
        b'{"name": "M", "input_shape": [1e400], "layers": [{"type": "relu"}]}',
    ],
)
def test_non_json_numbers_are_422_on_every_route(client: httpx.Client, raw: bytes) -> None:
    # Python's json took NaN/Infinity; echoing them back in the 422 then failed to render: a 500.
    r = client.post("/v1/networks", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and detail_of(r)["type"] == "json_invalid", r.text


def test_deeply_nested_body_is_422(client: httpx.Client) -> None:
    r = client.post("/v1/networks", content=b"[" * 5000 + b"]" * 5000, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "depth" in detail_of(r)["ctx"]["error"]
    r = client.post("/v1/networks", content=b"[" * 900 + b"]" * 900, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "input" not in detail_of(r)  # too big to echo back


@pytest.mark.parametrize("name", ["training", "_plan", "_modules"])
def test_layer_name_clashing_with_an_instance_attribute(client: httpx.Client, name: str) -> None:
    # ``training`` is set in nn.Module.__init__, so the class-level check missed it and add_module raised: a 500.
    r = client.post("/v1/networks", json=net({"name": name, "type": "Linear", "in_features": 4, "out_features": 3}))
    assert_422(r, ["body", "layers", 0, "name"], name, "clashes")


def test_huge_sizes_are_422_on_their_field(client: httpx.Client) -> None:
    # input_shape [2**62, 2**62] overflowed the probe allocation (a 500); 10**20 features gave a C++ trace.
    r = client.post("/v1/networks", json=net({"type": "relu"}, input_shape=[2**62, 2**62]))
    assert_422(r, ["body", "input_shape", 0], "less than or equal")
    r = client.post("/v1/networks", json=net({"type": "relu"}, input_shape=[2**20, 2**20]))
    assert_422(r, ["body", "input_shape"], "GRADSERVE_MAX_ACTIVATION_BYTES")
    r = client.post("/v1/networks", json=net({"type": "Linear", "in_features": 4, "out_features": 2**40}))
    assert_422(r, ["body", "layers", 0, "Linear", "out_features"], "less than or equal")


def test_network_that_would_fail_at_runtime_is_refused_up_front(client: httpx.Client) -> None:
    # The meta device checks neither softmax's dim nor dtypes: these validated, then every forward failed.
    r = client.post("/v1/networks", json=net({"type": "softmax", "dim": 9}))
    assert_422(r, ["body", "layers", 0], "softmax", "dim=9", "-2..1")
    r = client.post("/v1/networks", json=net({"type": "relu"}, {"type": "gelu"}, input_dtype="int64"))
    assert_422(r, ["body", "layers", 1], "gelu", "floating-point", "int64")
    ok = client.post("/v1/networks", json=EMB)
    assert ok.status_code == 201, ok.text


def test_query_integers_beyond_64_bits(client: httpx.Client) -> None:
    # Passed on to Redis or orjson, they overflowed: 500s.
    jid = finished_job(client)
    for path, name in [
        (f"/v1/jobs/{jid}/metrics?since=10000000000000000000000", "since"),
        ("/v1/jobs?offset=9223372036854775807", "offset"),
        (f"/v1/jobs/{jid}/gradients?step=100000000000000000000", "step"),
    ]:
        assert_422(client.get(path), ["query", name], "less than or equal")


@pytest.mark.parametrize("event_id", ["99999999999999999999999-0", "1-18446744073709551616"])
def test_event_id_beyond_64_bits_is_422_not_a_broken_stream(client: httpx.Client, event_id: str) -> None:
    # It matched the pattern, so a 200 went out and Redis's error then cut the stream.
    jid = finished_job(client)
    r = client.get(f"/v1/jobs/{jid}/events", headers={"Last-Event-ID": event_id})
    assert_422(r, ["header", "last-event-id"], "2**64")
    assert_422(client.get(f"/v1/jobs/{jid}/events", params={"after": event_id}), ["query", "after"], "2**64")


def test_tensor_form_errors_point_at_the_form(client: httpx.Client) -> None:
    # One error per form of the union (list, float, data, randn, ...) buried the real one.
    sid = client.post("/v1/sessions", json={"network": MLP, "device": "cpu"}).json()["id"]
    r = client.post(f"/v1/sessions/{sid}/forward", json={"input": {"randn": [-1, 4]}})
    assert len(r.json()["detail"]) == 1
    assert_422(r, ["body", "input", "randn", "randn", 0], "greater than or equal")
    r = client.post(f"/v1/sessions/{sid}/forward", json={"input": {"shape": [1, 4]}})
    assert len(r.json()["detail"]) == 1
    assert_422(r, ["body", "input"], "nested list", "randn")
    r = client.post(f"/v1/sessions/{sid}/forward", json={"input": {"randn": [1, 4], "seed": 2**63 * 4 - 1}})
    assert r.status_code == 422 and detail_of(r)["loc"] == ["body", "input", "randn", "seed"]


def test_session_indices_are_checked_before_pytorch(client: httpx.Client) -> None:
    # On a GPU these are device-side asserts that poison the worker; on CPU the message named no layer.
    sid = client.post("/v1/sessions", json={"network": EMB, "device": "cpu"}).json()["id"]
    r = client.post(f"/v1/sessions/{sid}/forward", json={"input": [[0, 1, 2, 3, 10]]})
    assert_422(r, ["body", "input"], "'emb' (Embedding)", "num_embeddings=10", "0..10")
    sid = client.post("/v1/sessions", json={"network": MLP, "device": "cpu"}).json()["id"]
    assert client.post(f"/v1/sessions/{sid}/forward", json={"input": [[1.0, 2, 3, 4]]}).status_code == 200
    r = client.post(f"/v1/sessions/{sid}/loss", json={"criterion": {"type": "CrossEntropyLoss"}, "target": [7]})
    assert_422(r, ["body", "target"], "CrossEntropyLoss", "[0, 3)", "largest 7")
    r = client.post(
        f"/v1/sessions/{sid}/loss", json={"criterion": {"type": "CrossEntropyLoss", "ignore_index": 7}, "target": [7]}
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("targets", "words"),
    [([0, 1, 7], ["[0, 3)", "0..7"]), ([0, 1, -1], ["-1..1"]), ([0.5, 1.0, 1.0], ["whole numbers"])],
)
def test_bad_class_labels_are_422_at_submission_not_a_failed_job(
    client: httpx.Client, targets: list, words: list[str]
) -> None:
    # They were accepted (202) and the job then failed on its worker.
    ds = {"source": "inline", "inputs": [[1.0, 2, 3, 4]] * 3, "targets": targets}
    assert_422(client.post("/v1/jobs", json={**JOB, "dataset": ds}), ["body", "dataset", "targets"], *words)


def test_uploaded_labels_and_indices_are_checked_at_submission(client: httpx.Client) -> None:
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((3, 4), np.float32), targets=np.array([0, 1, 9]))
    up = client.post("/v1/datasets", content=buf.getvalue())
    assert up.status_code == 201 and up.json()["arrays"]["targets"] == {
        "shape": [3],
        "dtype": "int64",
        "integral": True,
        "min": 0,
        "max": 9,
    }
    r = client.post("/v1/jobs", json={**JOB, "dataset": {"source": "upload", "id": up.json()["id"]}})
    assert_422(r, ["body", "dataset", "id"], "[0, 3)", "0..9")
    ds = {"source": "inline", "inputs": [[0, 1, 2, 3, 11]] * 2, "targets": [[0.0] * 15] * 2}
    r = client.post("/v1/jobs", json={**JOB, "network": EMB, "criterion": {"type": "MSELoss"}, "dataset": ds})
    assert_422(r, ["body", "dataset", "inputs"], "num_embeddings=10", "0..11")


def test_uint64_labels_above_int64_are_refused(client: httpx.Client) -> None:
    # astype(int64) wrapped them to negatives.
    buf = io.BytesIO()
    np.savez(buf, inputs=np.zeros((2, 4), np.float32), targets=np.array([0, 2**64 - 1], dtype=np.uint64))
    assert_422(client.post("/v1/datasets", content=buf.getvalue()), ["body", "targets"], "int64")


def test_graph_shows_signed_saved_integers(client: httpx.Client) -> None:
    # PyTorch hands saved int64 fields out as unsigned: ignore_index=-100 read 18446744073709551516.
    r = client.get(f"/v1/jobs/{finished_job(client)}/graph")
    saved = next(n["saved"] for n in r.json()["nodes"] if n["name"] == "NllLossBackward0")
    assert saved["ignore_index"] == -100, json.dumps(saved)
