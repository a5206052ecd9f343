"""The exported program's checker, on JSON alone, and torch's export serializer it relies on (a private
module: this pins its round trip, so a torch upgrade that changes it fails here first)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.errors import InvalidInput
from models.nn.program_check import allowed_target, check_program, check_sym_expr


def test_allowlist() -> None:
    assert allowed_target("torch.ops.aten.conv2d.default")
    assert allowed_target("torch.ops.higher_order.wrap_with_set_grad_enabled")
    assert allowed_target("_operator.getitem")
    for bad in (
        "torch.ops.aten.from_file.default",
        "torch.ops.aten.empty.memory_format",
        "torch.ops.mylib.op.default",
        "torch.load",
        "torch.ops.higher_order.cond",
        "torch.ops.aten.conv2d.__class__.__init__",
    ):
        assert not allowed_target(bad), bad


def test_sym_grammar() -> None:
    check_sym_expr("Mul(Integer(32), Symbol('s53', positive=True, integer=True))", ())
    check_sym_expr("FloorDiv(s0 - 1, 2) + 1", ())
    for bad in ("__import__('os')", "s0.__class__", "lambda: 1", "Symbol('x; import os')", "[s0]"):
        with pytest.raises(InvalidInput):
            check_sym_expr(bad, ())


def test_torch_serde_round_trip_is_pinned() -> None:
    from torch._export.serde.serialize import SerializedArtifact, deserialize, serialize

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU())
    ep = torch.export.export(m.train(), (torch.randn(2, 4),))
    raw = serialize(ep).exported_program
    facts = check_program(raw, max_bytes=1 << 24, max_nodes=1000, loc=("p",))
    assert facts.parameters == ("0.weight", "0.bias", "1.weight", "1.bias")
    assert "torch.ops.aten.batch_norm.default" in facts.ops
    state = {
        k: nn.Parameter(v.detach().clone()) if k in facts.parameters else v.clone() for k, v in ep.state_dict.items()
    }
    rebuilt = deserialize(SerializedArtifact(raw, state, {}, b"")).module()
    x = torch.randn(2, 4)
    assert torch.equal(rebuilt(x), ep.module()(x))


def test_powers_are_a_symbol_squared_at_most() -> None:
    check_sym_expr("Pow(Symbol('s53', positive=True, integer=True), Integer(2))", ())
    for bad in ("9**9**9", "Pow(Integer(9), Integer(999))", "Pow(Symbol('s1'), Pow(Integer(9), Integer(9)))"):
        with pytest.raises(InvalidInput):
            check_sym_expr(bad, ())
