"""Session calls in their binary form (safetensors bodies and answers) against the JSON form, bit for bit."""

from __future__ import annotations

import httpx
import pytest
import torch

from gradserve.protocol.codec import OCTET, pack_call, unpack_answer
from tests.conftest import detail_of
from tests.lenet import LENET_SPEC

pytestmark = pytest.mark.integration
BINARY = {"Content-Type": OCTET, "Accept": OCTET}


def new_session(client: httpx.Client) -> str:
    r = client.post("/v1/sessions", json={"network": LENET_SPEC, "seed": 7, "device": "cpu"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def as_json(client: httpx.Client, sid: str, op: str, tensors: dict[str, torch.Tensor], args: dict) -> dict:
    body = {**args, **{k: {"data": v.tolist(), "dtype": "float32"} for k, v in tensors.items()}}
    r = client.post(f"/v1/sessions/{sid}/{op}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def as_binary(client: httpx.Client, sid: str, op: str, tensors: dict[str, torch.Tensor], args: dict) -> dict:
    r = client.post(f"/v1/sessions/{sid}/{op}", content=pack_call(tensors, args), headers=BINARY)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == OCTET
    return unpack_answer(r.content)


def same(js: dict, binary: dict) -> None:
    """Every field equal; tensors of the binary answer equal the JSON lists decoded as float32."""
    assert js.keys() == binary.keys()
    for key, value in binary.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == torch.float32, key
            assert torch.equal(value, torch.tensor(js[key], dtype=torch.float32)), key
        else:
            assert value == js[key], key


def test_binary_and_json_forms_are_bit_identical(client: httpx.Client) -> None:
    a, b = new_session(client), new_session(client)
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    target = torch.randn(4, 10, generator=torch.Generator().manual_seed(4))
    gradient = torch.randn(4, 10, generator=torch.Generator().manual_seed(5))
    steps = [
        ("forward", {"input": x}, {}),
        ("backward", {"gradient": gradient}, {"retain_graph": True}),
        ("loss", {"target": target}, {"criterion": {"type": "MSELoss"}}),
        ("backward", {}, {}),
        ("loss", {"target": target}, {"criterion": {"type": "L1Loss", "reduction": "none"}}),
    ]
    for op, tensors, args in steps:
        js, binary = as_json(client, a, op, tensors, args), as_binary(client, b, op, tensors, args)
        same(js, binary)
        if op != "backward":
            assert isinstance(binary["threads"], int) and binary["threads"] >= 1
    assert isinstance(binary["loss"], torch.Tensor) and binary["loss"].shape == (4, 10)

    for name in ("conv1.weight", "fc3.bias"):
        js = client.get(f"/v1/sessions/{a}/parameters/{name}").json()
        r = client.get(f"/v1/sessions/{b}/parameters/{name}", headers={"Accept": OCTET})
        assert r.status_code == 200 and r.headers["content-type"] == OCTET
        same(js, unpack_answer(r.content))
    # A parameter whose grad is None: null in JSON, absent from the binary answer's tensors.
    client.post(f"/v1/sessions/{b}/zero_grad")
    r = client.get(f"/v1/sessions/{b}/parameters/fc3.bias", headers={"Accept": OCTET})
    assert unpack_answer(r.content)["grad"] is None


def test_binary_request_json_answer_and_the_reverse(client: httpx.Client) -> None:
    sid = new_session(client)
    x = torch.randn(1, 1, 32, 32)
    r = client.post(f"/v1/sessions/{sid}/forward", content=pack_call({"input": x}), headers={"Content-Type": OCTET})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    first = torch.tensor(r.json()["output"])
    r = client.post(f"/v1/sessions/{sid}/forward", json={"input": x.tolist()}, headers={"Accept": OCTET})
    assert torch.equal(unpack_answer(r.content)["output"], first)


@pytest.mark.parametrize(
    ("op", "content", "loc", "words"),
    [
        ("forward", b"\xff\x00\x00\x00\x00\x00\x00\x00garbage", ["body"], "not a valid safetensors file"),
        (
            "loss",
            pack_call({"target": torch.ones(1, 10)}, None)[:8] + b"",  # header cut off: malformed
            ["body"],
            "not a valid safetensors file",
        ),
        ("forward", pack_call({"inputs": torch.ones(1, 1, 32, 32)}), ["body", "inputs"], "unknown tensor 'inputs'"),
        ("forward", pack_call({}), ["body"], 'exactly one of "input"'),
        ("loss", pack_call({"target": torch.ones(1, 10)}, {"criterion": {"type": "MSE"}}), ["body", "criterion"], ""),
        ("backward", pack_call({}, {"retain_graph": "yes"}), ["body", "retain_graph"], "boolean"),
    ],
)
def test_bad_binary_bodies_are_422s(client: httpx.Client, op: str, content: bytes, loc: list, words: str) -> None:
    sid = new_session(client)
    r = client.post(f"/v1/sessions/{sid}/{op}", content=content, headers=BINARY)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    err = detail_of(r)
    assert err["loc"][: len(loc)] == loc and words in err["msg"], err


def test_metadata_that_is_not_json_is_a_422(client: httpx.Client) -> None:
    from safetensors.torch import save

    sid = new_session(client)
    content = save({"input": torch.ones(1, 1, 32, 32)}, metadata={"args": "{criterion: MSELoss}"})
    r = client.post(f"/v1/sessions/{sid}/forward", content=content, headers=BINARY)
    assert r.status_code == 422
    err = detail_of(r)
    assert err["loc"] == ["body", "__metadata__", "args"] and "JSON object" in err["msg"]
