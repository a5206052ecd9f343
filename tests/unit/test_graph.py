"""The autograd graph dump against PyTorch's own grad_fn objects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.errors import ServiceUnavailable
from models.nn import graph as G
from tests.lenet import Net


@pytest.fixture(scope="module")
def lenet_loss() -> tuple[Net, torch.Tensor]:
    torch.manual_seed(0)
    net = Net()
    loss = nn.MSELoss()(net(torch.randn(1, 1, 32, 32)), torch.randn(1, 10))
    return net, loss


def test_nodes_follow_next_functions(lenet_loss) -> None:
    net, loss = lenet_loss
    dump = G.trace(loss, dict(net.named_parameters()))
    nodes = {n["id"]: n for n in dump["nodes"]}
    assert nodes[dump["root"]]["name"] == "MseLossBackward0"
    # every node's outgoing edges are its next_functions, in order, Nones skipped
    by_fn: dict[str, object] = {}
    queue = [(loss.grad_fn, dump["root"])]
    while queue:
        fn, node_id = queue.pop()
        by_fn[node_id] = fn
        assert nodes[node_id]["name"] == type(fn).__name__
        edges = [e for e in dump["edges"] if e["source"] == node_id]
        expected = [(i, f) for i, (f, _) in enumerate(fn.next_functions) if f is not None]
        assert [e["index"] for e in edges] == [i for i, _ in expected]
        queue.extend((f, e["target"]) for (_, f), e in zip(expected, edges, strict=True) if e["target"] not in by_fn)
    assert len(by_fn) == len(dump["nodes"]) and not dump["truncated"]


def test_accumulate_grad_names_parameters(lenet_loss) -> None:
    net, loss = lenet_loss
    dump = G.trace(loss, {p: n for n, p in net.named_parameters()})
    leaves = {n["param"]["name"]: n["param"]["shape"] for n in dump["nodes"] if n["name"] == "AccumulateGrad"}
    assert leaves == {n: list(p.shape) for n, p in net.named_parameters()}
    addmm = dump["nodes"][1]
    assert addmm["name"] == "AddmmBackward0" and addmm["saved"]["mat1"]["shape"] == [1, 84]


def test_node_cap_truncates(lenet_loss) -> None:
    net, loss = lenet_loss
    dump = G.trace(loss, dict(net.named_parameters()), max_nodes=4)
    assert dump["truncated"] and len(dump["nodes"]) == 4
    ids = {n["id"] for n in dump["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in dump["edges"])
    assert "truncated at 4 nodes" in G.to_dot(dump)


def test_freed_saved_tensors_are_marked() -> None:
    w = torch.randn(3, requires_grad=True)
    y = (w * w).sum()
    y.backward()
    dump = G.trace(y, {"w": w})
    mul = next(n for n in dump["nodes"] if n["name"] == "MulBackward0")
    assert mul["saved"]["self"] == {"freed": True}


def test_leaf_and_constant_roots() -> None:
    w = torch.randn(2, requires_grad=True)
    assert G.trace(w, {"w": w})["nodes"] == [
        {"id": "n0", "name": "AccumulateGrad", "param": {"name": "w", "shape": [2]}}
    ]
    assert G.trace(torch.ones(2))["nodes"] == []


def test_dot_escapes_and_svg_renders(lenet_loss, monkeypatch: pytest.MonkeyPatch) -> None:
    net, loss = lenet_loss
    source = G.to_dot(G.trace(loss, dict(net.named_parameters())), title='a "quoted" net')
    assert source.startswith('digraph "a \\"quoted\\" net" {') and "n0 -> n1;" in source
    if G.graphviz_available():
        assert "<svg" in G.to_svg(source)
    monkeypatch.setattr(G.shutil, "which", lambda _: None)
    with pytest.raises(ServiceUnavailable, match="Graphviz"):
        G.to_svg(source)
