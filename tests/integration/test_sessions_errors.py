"""Session errors: each one a clear status and message, and the worker keeps serving afterwards."""

from __future__ import annotations

import httpx
import pytest
import torch

from tests.conftest import detail_of
from tests.integration.test_sessions import SEED, T, call, new_session, param
from tests.lenet import LENET_SPEC, Net

pytestmark = pytest.mark.usefixtures("session_threads")
X = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(21))
TARGET = torch.randn(1, 10, generator=torch.Generator().manual_seed(22))
MSE = {"type": "MSELoss"}


@pytest.fixture
def sid(client: httpx.Client) -> str:
    return new_session(client, optimizer={"type": "SGD", "lr": 0.01})["id"]


def test_single_sample_asks_for_a_batch_dimension(client: httpx.Client, sid: str) -> None:
    r = client.post(f"/v1/sessions/{sid}/forward", json={"input": X[0].tolist()})
    assert r.status_code == 422, r.text
    d = detail_of(r)
    assert d["loc"] == ["body", "input"]
    assert "mini-batch" in d["msg"] and "unsqueeze(0)" in d["msg"]
    assert "[N, 1, 32, 32]" in d["msg"] and "[1, 32, 32]" in d["msg"]
    assert (d["expected"], d["received"]) == ("[N, 1, 32, 32]", "[1, 32, 32]")
    # the same sample with the batch dimension added works
    assert call(client, sid, "forward", {"input": X[0].unsqueeze(0).tolist()})["shape"] == [1, 10]


def test_wrong_sample_shape_and_dtype(client: httpx.Client, sid: str) -> None:
    r = client.post(f"/v1/sessions/{sid}/forward", json={"input": {"zeros": [2, 3, 32, 32]}})
    assert r.status_code == 422 and "[N, 1, 32, 32]" in detail_of(r)["msg"] and "[2, 3, 32, 32]" in detail_of(r)["msg"]
    r = client.post(f"/v1/sessions/{sid}/forward", json={"input": {"zeros": [1, 1, 32, 32], "dtype": "int64"}})
    assert r.status_code == 422 and "float32" in detail_of(r)["msg"]


def test_backward_with_nothing_to_backprop_is_409(client: httpx.Client, sid: str) -> None:
    r = client.post(f"/v1/sessions/{sid}/backward", json={})
    assert r.status_code == 409 and "forward" in r.json()["detail"]
    call(client, sid, "forward", {"input": X.tolist()})
    r = client.post(f"/v1/sessions/{sid}/backward", json={})
    assert r.status_code == 409 and "loss" in r.json()["detail"] and "[1, 10]" in r.json()["detail"]
    assert client.post(f"/v1/sessions/{sid}/loss", json={"criterion": MSE, "target": TARGET.tolist()}).is_success


def test_wrong_gradient_shape_names_both(client: httpx.Client, sid: str) -> None:
    call(client, sid, "forward", {"input": X.tolist()})
    r = client.post(f"/v1/sessions/{sid}/backward", json={"gradient": {"ones": [1, 5]}})
    assert r.status_code == 422, r.text
    d = detail_of(r)
    assert d["loc"] == ["body", "gradient"] and "[1, 5]" in d["msg"] and "[1, 10]" in d["msg"]


def test_unknown_parameter_lists_close_names(client: httpx.Client, sid: str) -> None:
    r = client.get(f"/v1/sessions/{sid}/parameters/conv1.bais")
    assert r.status_code == 404
    assert "conv1.bias" in r.json()["detail"] and "did you mean" in r.json()["detail"]


def test_second_backward_explains_retain_graph(client: httpx.Client, sid: str) -> None:
    torch.manual_seed(SEED)
    net = Net()
    loss = torch.nn.MSELoss()(net(X), TARGET)
    loss.backward(retain_graph=True)
    loss.backward()
    call(client, sid, "forward", {"input": X.tolist()})
    call(client, sid, "loss", {"criterion": MSE, "target": TARGET.tolist()})
    call(client, sid, "backward", {"retain_graph": True})
    call(client, sid, "backward")
    assert torch.equal(T(param(client, sid, "conv1.weight")["grad"]), net.conv1.weight.grad)
    r = client.post(f"/v1/sessions/{sid}/backward", json={})
    assert r.status_code == 409 and "retain_graph" in r.json()["detail"]
    r = client.post(f"/v1/sessions/{sid}/backward", json={"gradient": {"ones": [1, 10]}})
    assert r.status_code == 409 and "retain_graph" in r.json()["detail"]


def test_backward_after_a_step_is_409_like_pytorch(client: httpx.Client, sid: str) -> None:
    call(client, sid, "forward", {"input": X.tolist()})
    call(client, sid, "loss", {"criterion": MSE, "target": TARGET.tolist()})
    call(client, sid, "backward", {"retain_graph": True})
    call(client, sid, "step")
    r = client.post(f"/v1/sessions/{sid}/backward", json={})
    assert r.status_code == 409 and "modified in place" in r.json()["detail"]


def test_non_finite_loss_is_reported_not_fatal(client: httpx.Client, sid: str) -> None:
    call(client, sid, "forward", {"input": X.tolist()})
    got = call(client, sid, "loss", {"criterion": MSE, "target": (TARGET * 1e30).tolist()})
    assert got["loss"] == "inf"
    call(client, sid, "backward")
    torch.manual_seed(SEED)
    net = Net()
    loss = torch.nn.MSELoss()(net(X), TARGET * 1e30)
    assert loss.isinf()
    loss.backward()
    assert torch.equal(T(param(client, sid, "fc3.bias")["grad"]), net.fc3.bias.grad)
    # a gradient that overflows float32 comes back as strings, since JSON has no infinity
    call(client, sid, "forward", {"input": X.tolist()})
    huge = {"data": [[3e38] * 10], "dtype": "float32"}
    call(client, sid, "zero_grad")
    call(client, sid, "backward", {"gradient": huge, "retain_graph": True})
    call(client, sid, "backward", {"gradient": huge})
    grad = param(client, sid, "fc3.bias")["grad"]
    assert any(v in ("inf", "-inf", "nan") for v in grad)
    assert call(client, sid, "forward", {"input": X.tolist()})["shape"] == [1, 10]


def test_state_and_call_mistakes(client: httpx.Client, sid: str) -> None:
    assert client.post(f"/v1/sessions/{sid}/loss", json={"criterion": MSE, "target": [[0.0] * 10]}).status_code == 409
    assert client.get(f"/v1/sessions/{sid}/graph").status_code == 409
    no_opt = new_session(client)["id"]
    r = client.post(f"/v1/sessions/{no_opt}/step")
    assert r.status_code == 409 and "optimizer" in r.json()["detail"]
    r = client.post(f"/v1/sessions/{no_opt}/sgd_update", json={"lr": 0.1})
    assert r.status_code == 409 and "backward" in r.json()["detail"]
    r = client.put(f"/v1/sessions/{sid}/state", content=b"not safetensors")
    assert r.status_code == 422
    from models.wire.tensors import to_safetensors

    state = {k: v for k, v in Net().state_dict().items()}
    state["fc3.bias"] = torch.zeros(11)
    r = client.put(f"/v1/sessions/{sid}/state", content=to_safetensors(state))
    assert r.status_code == 422 and "fc3.bias" in detail_of(r)["msg"] and "[11]" in detail_of(r)["msg"]
    del state["fc3.bias"]
    r = client.put(f"/v1/sessions/{sid}/state", content=to_safetensors(state))
    assert r.status_code == 422 and "missing ['fc3.bias']" in detail_of(r)["msg"]


def test_bad_requests(client: httpx.Client) -> None:
    r = client.post("/v1/sessions", json={"network": LENET_SPEC, "network_id": "net_x"})
    assert r.status_code == 422
    r = client.post("/v1/sessions", json={"network_id": "net_missing"})
    assert r.status_code == 404
    r = client.post("/v1/sessions", json={"network": LENET_SPEC, "device": "cuda"})
    assert r.status_code == 422 and detail_of(r)["loc"] == ["body", "device"] and "GPU" in detail_of(r)["msg"]
    r = client.post("/v1/sessions", json={"network": LENET_SPEC, "optimizer": {"type": "SGD", "nesterov": True}})
    assert r.status_code == 422 and "Nesterov" in detail_of(r)["msg"]
    assert client.post("/v1/sessions/sess_nope/forward", json={"input": X.tolist()}).status_code == 404


def test_tenants_cannot_see_each_other(client: httpx.Client, client_bob: httpx.Client, sid: str) -> None:
    call(client, sid, "forward", {"input": X.tolist()})
    assert client_bob.get(f"/v1/sessions/{sid}").status_code == 404
    assert client_bob.post(f"/v1/sessions/{sid}/forward", json={"input": X.tolist()}).status_code == 404
    assert client_bob.get(f"/v1/sessions/{sid}/parameters/conv1.bias").status_code == 404
    assert client_bob.get(f"/v1/sessions/{sid}/state").status_code == 404
    assert client_bob.delete(f"/v1/sessions/{sid}").status_code == 404
    assert client.get(f"/v1/sessions/{sid}/parameters/conv1.bias").status_code == 200


def test_float_class_labels_ask_for_integers(client: httpx.Client, sid: str) -> None:
    call(client, sid, "forward", {"input": torch.cat([X, X]).tolist()})
    ce = {"type": "CrossEntropyLoss"}
    r = client.post(f"/v1/sessions/{sid}/loss", json={"criterion": ce, "target": [3.0, 1.0]})
    assert r.status_code == 422, r.text
    d = detail_of(r)
    assert d["loc"] == ["body", "target"] and "integers" in d["msg"] and "float32 [2]" in d["msg"]
    # probabilities shaped like the output stay valid, and so do the same labels as integers
    probs = torch.softmax(torch.randn(2, 10), 1).tolist()
    assert client.post(f"/v1/sessions/{sid}/loss", json={"criterion": ce, "target": probs}).is_success
    assert client.post(f"/v1/sessions/{sid}/loss", json={"criterion": ce, "target": [3, 1]}).is_success
