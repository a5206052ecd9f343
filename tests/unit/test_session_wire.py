"""The session wire protocol (models.wire.session, gradserve.protocol.codec) round-trips: refs, frames, bodies."""

from __future__ import annotations

import json

import pytest
import torch

from gradserve.protocol import codec
from models.errors import Conflict, GradserveError, InvalidInput
from models.wire import session as W
from models.wire.tensors import to_safetensors

TENSORS = [
    torch.randn(3, 4),
    torch.arange(6).view(2, 3),
    torch.tensor(float("nan")),
    torch.randn(2, dtype=torch.bfloat16),
    torch.zeros(0, 3),
]


@pytest.mark.parametrize("tensor", [*TENSORS, torch.randn(256, 1, 32, 32)])
def test_tensor_ref_roundtrip_inline_or_by_key(tensor: torch.Tensor) -> None:
    stored: dict[str, bytes] = {}
    ref, blob = W.tensor_ref(tensor, "k")
    if blob is not None:
        stored["k"] = blob
    assert ("key" in ref) == (tensor.numel() * tensor.element_size() > W.INLINE_MAX_BYTES)
    back = W.read_ref("input", ref, stored.pop)
    assert isinstance(back, torch.Tensor)
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor) or (tensor.isnan().all() and back.isnan().all())


def test_expired_ref_and_raw_ref() -> None:
    with pytest.raises(InvalidInput, match="expired") as err:
        W.read_ref("target", {"key": "gone"}, lambda _: None)
    assert err.value.loc == ("body", "target")
    assert W.read_ref("state", W.raw_ref("k"), {"k": b"bytes"}.get) == b"bytes"


def test_frames_roundtrip() -> None:
    out = torch.tensor([[1.5, float("inf")]])
    reply = W.read_frame(W.stamp(W.answer_frame({"output": out, "shape": [1, 2]}), 1.25), 3.0)
    assert json.loads(reply.body) == {"output": [[1.5, "inf"]], "shape": [1, 2]}
    assert (reply.media, reply.worker_ms, reply.call_ms) == ("application/json", 1.25, 3.0)

    binary = W.read_frame(W.stamp(W.answer_frame({"output": out, "grad": None}, binary=True), 0.5))
    assert binary.media == codec.OCTET
    back = codec.unpack_answer(binary.body)
    assert torch.equal(back["output"], out) and back["grad"] is None

    raw = W.read_frame(W.stamp(W.answer_frame("digraph {}", media="text/vnd.graphviz"), 0))
    assert (raw.body, raw.media) == (b"digraph {}", "text/vnd.graphviz")

    with pytest.raises(Conflict, match="no forward") as err:
        W.read_frame(W.stamp(W.error_frame(Conflict("no forward", ("body",))), 0))
    assert err.value.loc == ("body",)


def test_binary_body_roundtrip() -> None:
    x = torch.randn(2, 3)
    tensors, args = W.read_binary_body(codec.pack_call({"target": x}, {"criterion": {"type": "MSELoss"}}), ["target"])
    assert torch.equal(tensors["target"], x) and args == {"criterion": {"type": "MSELoss"}}
    assert W.read_binary_body(codec.pack_call({"input": x}), ["input"])[1] == {}


@pytest.mark.parametrize(
    ("blob", "loc", "msg"),
    [
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", ("body",), "not a valid safetensors file"),
        (to_safetensors({"input": torch.ones(1)}, {"args": "{oops"}), ("body", "__metadata__", "args"), "JSON object"),
        (to_safetensors({"input": torch.ones(1)}, {"args": "[1]"}), ("body", "__metadata__", "args"), "not list"),
        (codec.pack_call({"inptu": torch.ones(1)}), ("body", "inptu"), "unknown tensor 'inptu'"),
        (codec.pack_call({}, {"input": [1.0]}), ("body", "__metadata__", "args", "input"), "is a tensor"),
    ],
)
def test_binary_body_refusals(blob: bytes, loc: tuple, msg: str) -> None:
    with pytest.raises(GradserveError, match=msg) as err:
        W.read_binary_body(blob, ["input"])
    assert err.value.status == 422 and err.value.loc == loc


@pytest.mark.parametrize(
    ("pttl_ms", "ttl_s", "stale"),
    [(-2, 15, True), (15_000, 15, False), (6_000, 15, False), (4_000, 15, True), (1_500, 3, False), (900, 3, True)],
)
def test_heartbeat_stale_after_two_beats(pttl_ms: int, ttl_s: float, stale: bool) -> None:
    assert W.heartbeat_stale(pttl_ms, ttl_s) is stale
