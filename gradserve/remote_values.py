"""What ``rnet`` hands out: its children (``rnet.conv1``), parameters (``.data`` and ``.grad`` fetched when read)
and the output or loss of its last forward (``RemoteTensor``), which a loss function applied to it sends to the
session's ``loss`` call through ``__torch_function__``; its ``grad_fn`` walks the service's graph dump as
PyTorch's ``grad_fn.name`` and ``grad_fn.next_functions`` walk a local one."""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from gradserve.protocol.catalogue import LOSS_FIELDS

# torch.nn.functional loss -> our criterion type (its fields: the protocol's LOSS_FIELDS).
LOSSES: dict[Any, str] = {
    F.mse_loss: "MSELoss",
    F.l1_loss: "L1Loss",
    F.smooth_l1_loss: "SmoothL1Loss",
    F.huber_loss: "HuberLoss",
    F.cross_entropy: "CrossEntropyLoss",
    F.nll_loss: "NLLLoss",
    F.binary_cross_entropy: "BCELoss",
    F.binary_cross_entropy_with_logits: "BCEWithLogitsLoss",
    F.kl_div: "KLDivLoss",
    F.soft_margin_loss: "SoftMarginLoss",
    F.poisson_nll_loss: "PoissonNLLLoss",
}


class NetLike(Protocol):
    """What the values below read of the ``RemoteNet`` that hands them out (``gradserve.remote``)."""

    _module: nn.Module | None
    generation: int
    loss_generation: int

    def _named_shapes(self) -> list[tuple[str, list[int]]]: ...
    def parameter(self, name: str) -> dict[str, Any]: ...
    def graph(self, root: str = "auto", max_nodes: int = 500) -> dict[str, Any]: ...
    def backward(self, gradient: torch.Tensor | None = None, retain_graph: bool = False) -> None: ...
    def loss(self, criterion: dict[str, Any], output: RemoteTensor, target: torch.Tensor) -> RemoteTensor: ...


class RemoteModule:
    """``rnet.conv1``: a child of the remote network, whose parameters are read by name."""

    def __init__(self, net: NetLike, prefix: str) -> None:
        self._net = net
        self._prefix = prefix

    def resolve(self) -> Any:
        names = [n for n, _ in self._net._named_shapes()]
        if self._prefix in names:
            return RemoteParameter(self._net, self._prefix, dict(self._net._named_shapes())[self._prefix])
        if not any(n.startswith(self._prefix + ".") for n in names) and not self._is_module():
            raise AttributeError(f"the remote network has no attribute '{self._prefix}'")
        return self

    def _is_module(self) -> bool:
        module = self._net._module
        return module is not None and isinstance(getattr(module, self._prefix, None), nn.Module)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        full = f"{self._prefix}.{name}"
        shapes = dict(self._net._named_shapes())
        return RemoteParameter(self._net, full, shapes.get(full))

    def __repr__(self) -> str:
        return f"RemoteModule('{self._prefix}')"


class RemoteParameter:
    """A parameter (or buffer) of the remote network: ``.data`` and ``.grad`` are fetched on each read."""

    def __init__(self, net: NetLike, name: str, shape: list[int] | None) -> None:
        self._net = net
        self.name = name
        self._shape = shape

    @property
    def data(self) -> torch.Tensor:
        data: torch.Tensor = self._net.parameter(self.name)["data"]
        return data

    @property
    def grad(self) -> torch.Tensor | None:
        grad: torch.Tensor | None = self._net.parameter(self.name)["grad"]
        return grad

    @property
    def shape(self) -> torch.Size:
        if self._shape is None:
            self._shape = list(self._net.parameter(self.name)["shape"])
        return torch.Size(self._shape)

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self.shape if dim is None else self.shape[dim]

    def __repr__(self) -> str:
        return f"RemoteParameter('{self.name}', shape={list(self.shape)})"


class RemoteTensor:
    """The output (or loss) of the session's last forward. Values came with the call; the graph stays remote."""

    def __init__(self, net: NetLike, value: torch.Tensor, grad_fn: str | None, of: str, generation: int) -> None:
        self._net = net
        self._value = value
        self._grad_fn_name = grad_fn
        self._grad_fn: GradFn | None = None
        self.of = of  # "output" or "loss": what backward() and grad_fn start from
        self._generation = generation

    def check_fresh(self) -> None:
        if self._generation != self._net.generation or (
            self.of == "loss" and self._generation != self._net.loss_generation
        ):
            raise RuntimeError(
                f"this {self.of} is from an earlier forward; the session keeps only the last one: call rnet(x) again"
            )

    def fetch(self) -> torch.Tensor:
        return self._value.clone()

    def item(self) -> float | int | bool:
        return self._value.item()

    def tolist(self) -> Any:
        return self._value.tolist()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> Any:
        return self._value.numpy() if dtype is None else self._value.numpy().astype(dtype)

    @property
    def shape(self) -> torch.Size:
        return self._value.shape

    @property
    def dtype(self) -> torch.dtype:
        return self._value.dtype

    def size(self, dim: int | None = None) -> torch.Size | int:
        return self._value.size() if dim is None else self._value.size(dim)

    def dim(self) -> int:
        return self._value.dim()

    @property
    def requires_grad(self) -> bool:
        return self._grad_fn_name is not None

    @property
    def grad_fn(self) -> GradFn | None:
        """The autograd graph's root node, dumped by the service and walked like PyTorch's."""
        if self._grad_fn_name is None:
            return None
        if self._grad_fn is None:
            self.check_fresh()
            self._grad_fn = graph_root(self._net.graph(root=self.of, max_nodes=5000), self._net)
        return self._grad_fn

    def backward(self, gradient: torch.Tensor | None = None, retain_graph: bool = False) -> None:
        """``loss.backward()``, or ``output.backward(gradient)``, on the session."""
        self.check_fresh()
        if self.of == "output":
            if gradient is None:
                raise RuntimeError("grad can be implicitly created only for scalar outputs: pass a gradient")
            self._net.backward(gradient, retain_graph)
        else:
            self._net.backward(gradient if gradient is not None and self._value.dim() else None, retain_graph)

    def __repr__(self) -> str:
        text = repr(self._value)
        if self._grad_fn_name is None:
            return text
        return f"{text[:-1]}, grad_fn=<{self._grad_fn_name}>)"

    @classmethod
    def __torch_function__(
        cls, func: Any, types: tuple[type, ...], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in LOSSES and args and isinstance(args[0], RemoteTensor):
            criterion, target = _criterion(func, args, kwargs)
            return args[0]._net.loss(criterion, args[0], target)
        # Anything else (torch.as_tensor, torch.equal, ...) runs locally on the fetched values.
        local = [a.fetch() if isinstance(a, RemoteTensor) else a for a in args]
        return func(*local, **{k: v.fetch() if isinstance(v, RemoteTensor) else v for k, v in kwargs.items()})


def _criterion(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
    """A functional loss call as our criterion spec and its target."""
    kind = LOSSES[func]
    carried = LOSS_FIELDS[kind]
    bound = inspect.signature(func).bind(*args, **kwargs).arguments
    for legacy in ("size_average", "reduce"):
        if bound.get(legacy) is not None:
            raise TypeError(f"{kind}: the legacy '{legacy}' argument is not supported; use reduction=")
    criterion: dict[str, Any] = {"type": kind, "reduction": bound.get("reduction", "mean")}
    for name in carried:
        value = bound.get(name)
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if value is not None:
            criterion[name] = value
    target = bound.get("target")
    if target is None:
        raise TypeError(f"{kind} needs a target tensor")
    return criterion, torch.as_tensor(target)


# --- the autograd graph: the service's dump walked like PyTorch's ``grad_fn.name``, ``grad_fn.next_functions``


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
        return RemoteParameter(self._graph.net, self.param["name"], self.param.get("shape"))

    def __repr__(self) -> str:
        return f"<{self.name} object>"


class _Graph:
    def __init__(self, dump: dict[str, Any], net: NetLike) -> None:
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


def graph_root(dump: dict[str, Any], net: NetLike) -> GradFn | None:
    if dump.get("root") is None:
        return None
    return _Graph(dump, net).node(dump["root"])
