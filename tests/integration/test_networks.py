"""Networks over real HTTP: create, read back, tenants, auth, and a table of refused specs."""

from __future__ import annotations

import copy

import httpx
import pytest

from tests.conftest import Service, detail_of
from tests.lenet import LENET_SPEC, RESIDUAL_SPEC, Net, ResBlock


def test_lenet_round_trip(client: httpx.Client) -> None:
    created = client.post("/v1/networks", json=LENET_SPEC)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["repr"] == repr(Net())
    assert body["num_parameters"] == 10
    assert body["parameters"][0] == {"name": "conv1.weight", "shape": [6, 1, 5, 5], "numel": 150}
    assert body["num_elements"] == sum(p.numel() for p in Net().parameters())
    assert body["output_shape"] == [10]
    fetched = client.get(f"/v1/networks/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == body


def test_residual_dag(client: httpx.Client) -> None:
    created = client.post("/v1/networks", json=RESIDUAL_SPEC)
    assert created.status_code == 201, created.text
    assert created.json()["repr"] == repr(ResBlock())
    assert created.json()["output_shape"] == [4]


def test_tenants_are_isolated(client: httpx.Client, client_bob: httpx.Client) -> None:
    net_id = client.post("/v1/networks", json=LENET_SPEC).json()["id"]
    assert client_bob.get(f"/v1/networks/{net_id}").status_code == 404
    assert client.get(f"/v1/networks/{net_id}").status_code == 200


def test_auth_errors(service: Service) -> None:
    with httpx.Client(base_url=service.url) as anonymous:
        missing = anonymous.post("/v1/networks", json=LENET_SPEC)
        assert missing.status_code == 401
        assert "Bearer" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = anonymous.get("/v1/networks/x", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert anonymous.get("/healthz").status_code == 200


def test_unknown_id_is_404(client: httpx.Client) -> None:
    response = client.get("/v1/networks/net_doesnotexist")
    assert response.status_code == 404
    assert "net_doesnotexist" in response.json()["detail"]


def test_body_over_limit_is_413(client: httpx.Client) -> None:
    huge = b'{"input_shape": [1], "layers": [' + b" " * (33 * 1024 * 1024) + b"]}"
    response = client.post("/v1/networks", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "GRADSERVE_MAX_SPEC_BODY_BYTES" in response.json()["detail"]  # a spec route's own cap


def test_openapi_shows_lenet_and_variants(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    text = str(schema)
    assert "LeNet" in text and "conv1" in text
    assert "discriminator" in text
    assert client.get("/docs").status_code == 200


def test_readyz_lists_workers(client: httpx.Client) -> None:
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert len(body["workers"]) >= 1
    assert body["workers"][0]["device"] in {"cpu", "cuda"}


def _lenet_with(index: int, **changes: object) -> dict:
    spec = copy.deepcopy(LENET_SPEC)
    spec["layers"][index].update(changes)
    return spec


def _lenet_without(*drop: int) -> dict:
    spec = copy.deepcopy(LENET_SPEC)
    spec["layers"] = [layer for i, layer in enumerate(spec["layers"]) if i not in drop]
    return spec


def _tiny(*layers: dict, input_shape: list[int] | None = None) -> dict:
    return {"input_shape": input_shape or [4], "layers": list(layers)}


LIN = {"type": "Linear", "in_features": 4, "out_features": 4}

# (id, spec, expected loc, key words in the message)
INVALID = [
    ("unknown type", _tiny({"type": "Conv4d"}), ["body", "layers", 0], ["Conv4d", "Linear"]),
    ("unknown field", _lenet_with(0, colour="red"), ["body", "layers", 0, "Conv2d", "colour"], ["Extra inputs"]),
    (
        "missing argument",
        _tiny({"type": "Linear", "in_features": 4}),
        ["body", "layers", 0, "Linear", "out_features"],
        ["Field required"],
    ),
    (
        "string for int",
        _lenet_with(0, out_channels="6"),
        ["body", "layers", 0, "Conv2d", "out_channels"],
        ["valid integer"],
    ),
    (
        "float for int",
        _tiny({**LIN, "in_features": 4.5}),
        ["body", "layers", 0, "Linear", "in_features"],
        ["valid integer"],
    ),
    (
        "zero features",
        _tiny({**LIN, "out_features": 0}),
        ["body", "layers", 0, "Linear", "out_features"],
        ["greater than or equal to 1"],
    ),
    ("bool as string", _tiny({**LIN, "bias": "yes"}), ["body", "layers", 0, "Linear", "bias"], ["valid boolean"]),
    (
        "dropout p above 1",
        _tiny({"type": "Dropout", "p": 1.5}),
        ["body", "layers", 0, "Dropout", "p"],
        ["less than or equal to 1"],
    ),
    (
        "bad padding mode",
        _lenet_with(0, padding_mode="mirror"),
        ["body", "layers", 0, "Conv2d", "padding_mode"],
        ["zeros"],
    ),
    ("missing input_shape", {"layers": [LIN]}, ["body", "input_shape"], ["Field required"]),
    ("empty layers", {"input_shape": [4], "layers": []}, ["body", "layers"], ["at least 1"]),
    (
        "negative input dim",
        {"input_shape": [-1], "layers": [LIN]},
        ["body", "input_shape", 0],
        ["greater than or equal to 1"],
    ),
    ("bad layer name", _tiny({**LIN, "name": "fc 1"}), ["body", "layers", 0, "Linear", "name"], ["pattern"]),
    ("unknown top-level field", {**_tiny(LIN), "optimiser": "SGD"}, ["body", "optimiser"], ["Extra inputs"]),
    (
        "fc1 without flatten",
        _lenet_without(6),
        ["body", "layers", 6],
        ["'fc1' (Linear)", "400 input features", "[N, 16, 5, 5]", "flatten"],
    ),
    (
        "fc1 wrong in_features",
        _lenet_with(7, in_features=256),
        ["body", "layers", 7],
        ["'fc1' (Linear)", "256 input features", "receives 400", "[N, 400]"],
    ),
    (
        "conv2 wrong channels",
        _lenet_with(3, in_channels=3),
        ["body", "layers", 3],
        ["'conv2' (Conv2d)", "3 input channels", "receives 6", "[N, 6, 14, 14]"],
    ),
    (
        "first layer wrong channels",
        {**LENET_SPEC, "input_shape": [3, 32, 32]},
        ["body", "layers", 0],
        ["'conv1' (Conv2d)", "1 input channels", "receives 3"],
    ),
    (
        "kernel larger than input",
        {**LENET_SPEC, "input_shape": [1, 12, 12]},
        ["body", "layers", 3],
        ["'conv2' (Conv2d)", "[N, 6, 4, 4]", "Kernel size"],
    ),
    (
        "deep mismatch fc3",
        _lenet_with(11, in_features=83),
        ["body", "layers", 11],
        ["'fc3' (Linear)", "83 input features", "receives 84"],
    ),
    (
        "conv on 2-D input",
        {**LENET_SPEC, "input_shape": [32, 32]},
        ["body", "layers", 0],
        ["'conv1' (Conv2d)", "4-D input", "3-D", "[N, 32, 32]"],
    ),
    (
        "batchnorm features",
        _tiny(LIN, {"type": "BatchNorm1d", "num_features": 5}),
        ["body", "layers", 1],
        ["BatchNorm1d", "5 features", "receives 4"],
    ),
    (
        "input names later layer",
        _tiny({**LIN, "name": "a", "inputs": ["b"]}, {**LIN, "name": "b"}),
        ["body", "layers", 0, "inputs", 0],
        ["'b'", "defined later", "cycles"],
    ),
    (
        "input names itself",
        _tiny({**LIN, "name": "a", "inputs": ["a"]}),
        ["body", "layers", 0, "inputs", 0],
        ["own output", "cycle"],
    ),
    (
        "unknown input",
        _tiny({**LIN, "name": "a"}, {"type": "add", "inputs": ["a", "ghost"]}),
        ["body", "layers", 1, "inputs", 1],
        ["unknown input 'ghost'", "known: input, a"],
    ),
    (
        "duplicate names",
        _tiny({**LIN, "name": "a"}, {**LIN, "name": "a"}),
        ["body", "layers", 1, "name"],
        ["duplicate layer name 'a'", "layers[0]"],
    ),
    (
        "add with one input",
        _tiny({**LIN, "name": "a"}, {"type": "add", "inputs": ["a"]}),
        ["body", "layers", 1, "inputs"],
        ["at least 2 inputs", "got 1"],
    ),
    (
        "add shapes differ",
        _tiny(
            {**LIN, "name": "a"},
            {"type": "Linear", "in_features": 4, "out_features": 3, "name": "b"},
            {"type": "add", "inputs": ["a", "b"]},
        ),
        ["body", "layers", 2],
        ["cannot broadcast", "[N, 4]", "[N, 3]"],
    ),
    ("reserved name", _tiny({**LIN, "name": "input"}), ["body", "layers", 0, "name"], ['"input" is reserved']),
    (
        "module attribute name",
        _tiny({**LIN, "name": "forward"}),
        ["body", "layers", 0, "name"],
        ["nn.Module attribute"],
    ),
    (
        "too many parameters",
        _tiny({"type": "Linear", "in_features": 4, "out_features": 20_000_000}),
        ["body", "layers"],
        ["parameters; the limit is", "GRADSERVE_MAX_PARAMETERS"],
    ),
    (
        "activation memory",
        {"input_shape": [1, 30000, 30000], "layers": [{"type": "relu"}]},
        ["body"],
        ["activation memory", "GRADSERVE_MAX_ACTIVATION_BYTES"],
    ),
    ("too many layers", _tiny(*[{"type": "relu"}] * 300), ["body", "layers"], ["300 layers", "GRADSERVE_MAX_LAYERS"]),
    (
        "groupnorm not divisible",
        _tiny({"type": "GroupNorm", "num_groups": 3, "num_channels": 4}),
        ["body", "layers", 0],
        ["cannot be built", "divisible"],
    ),
    ("lost batch dimension", _tiny(LIN, {"type": "flatten"}), ["body", "layers", 1], ["lost the batch dimension"]),
    (
        "embedding on floats",
        _tiny({"type": "Embedding", "num_embeddings": 10, "embedding_dim": 3}),
        ["body", "layers", 0],
        ["integer indices", "input_dtype"],
    ),
]


@pytest.mark.parametrize(("spec", "loc", "words"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_spec_is_422_naming_the_layer(client: httpx.Client, spec: dict, loc: list, words: list[str]) -> None:
    response = client.post("/v1/networks", json=spec)
    assert response.status_code == 422, response.text
    detail = detail_of(response)
    assert detail["loc"][: len(loc)] == loc, detail
    for word in words:
        assert word in detail["msg"], (word, detail["msg"])


def test_prometheus_metrics_count_requests_by_route(client: httpx.Client) -> None:
    client.get("/v1/networks/net_missing")
    text = client.get("/metrics").text
    assert 'gradserve_http_requests_total{method="GET",route="/v1/networks/{network_id}",status="404"}' in text
    assert "gradserve_http_request_seconds_bucket" in text
