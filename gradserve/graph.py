"""The service's graph dump walked like PyTorch's: ``grad_fn.name``, ``grad_fn.next_functions``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradserve.remote import RemoteNet
    from gradserve.remote_values import RemoteParameter


class Name(str):
    """``grad_fn.name`` compares as the string and, called as PyTorch's ``name()`` is, returns it."""

    def __call__(self) -> str:
        return str(self)


class GradFn:
    """One node of a dumped autograd graph (``MseLossBackward0``, ``AddmmBackward0``, ``AccumulateGrad`` ...)."""

    def __init__(self, node: dict[str, Any], graph: _Graph) -> None:
        self.name = Name(node["name"])
        self.id: str = node["id"]
        self.param: dict[str, Any] | None = node.get("param")  # on AccumulateGrad: {"name", "shape"}
        self.saved: dict[str, Any] = node.get("saved", {})
        self._graph = graph

    @property
    def next_functions(self) -> tuple[tuple[GradFn | None, int], ...]:
        """``(node, input_nr)`` per input in PyTorch's order; ``(None, 0)`` where no gradient flows."""
        edges = sorted(self._graph.edges.get(self.id, []), key=lambda e: e["index"])
        slots: list[tuple[GradFn | None, int]] = [(None, 0)] * (edges[-1]["index"] + 1 if edges else 0)
        for edge in edges:
            slots[edge["index"]] = (self._graph.node(edge["target"]), edge["input_nr"])
        return tuple(slots)

    @property
    def variable(self) -> RemoteParameter | None:
        """On an ``AccumulateGrad``: the parameter it accumulates into, as PyTorch's ``.variable``."""
        if self.param is None:
            return None
        from gradserve.remote_values import RemoteParameter

        return RemoteParameter(self._graph.net, self.param["name"], self.param.get("shape"))

    def __repr__(self) -> str:
        return f"<{self.name} object>"


class _Graph:
    def __init__(self, dump: dict[str, Any], net: RemoteNet) -> None:
        self.net = net
        self.nodes = {n["id"]: n for n in dump["nodes"]}
        self.edges: dict[str, list[dict[str, Any]]] = {}
        for edge in dump["edges"]:
            self.edges.setdefault(edge["source"], []).append(edge)
        self._made: dict[str, GradFn] = {}

    def node(self, node_id: str) -> GradFn:
        if node_id not in self._made:
            self._made[node_id] = GradFn(self.nodes[node_id], self)
        return self._made[node_id]


def graph_root(dump: dict[str, Any], net: RemoteNet) -> GradFn | None:
    if dump.get("root") is None:
        return None
    return _Graph(dump, net).node(dump["root"])
