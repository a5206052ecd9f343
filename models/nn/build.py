"""Spec -> ``torch.nn.Module``, and validation of a spec by shape inference on the meta device.

The built module is an ``nn.Module`` subclass named after the spec, whose children are the spec's
``CamelCase`` layers in declared order, so ``repr``, ``named_parameters`` and seeded initial weights
equal those of the hand-written module. Functional ops live only in the forward plan.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.errors import InvalidInput, Loc, first_line
from models.nn.shapes import PROBE_BATCH, check_layer_input, fmt_shape
from models.settings import Settings
from models.spec import layers as L
from models.spec.layers import LayerBase
from models.spec.network import NetworkSpec
from models.spec.types import torch_kwargs

Tensors = Sequence[torch.Tensor]

DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}


@dataclass(frozen=True)
class Step:
    index: int
    key: str  # the name its output is stored under
    inputs: tuple[str, ...]
    call: Callable[[nn.Module, Tensors], torch.Tensor]
    free_after: tuple[str, ...] = ()  # outputs no later step reads, dropped to free memory early


class SpecNet(nn.Module):
    """A network built from a spec. Subclassed per spec name so that ``repr`` starts with it."""

    def __init__(self) -> None:
        super().__init__()
        self._plan: tuple[Step, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {"input": x}
        out = x
        for step in self._plan:
            out = step.call(self, [values[k] for k in step.inputs])
            values[step.key] = out
            for key in step.free_after:
                del values[key]
        return out


@dataclass(frozen=True)
class NetworkSummary:
    repr: str
    parameters: list[dict[str, Any]]
    num_parameters: int
    num_elements: int
    output_shape: list[int]
    activation_bytes_per_sample: int

    def public(self) -> dict[str, Any]:
        return {
            "repr": self.repr,
            "parameters": self.parameters,
            "num_parameters": self.num_parameters,
            "num_elements": self.num_elements,
            "output_shape": self.output_shape,
            "activation_bytes_per_sample": self.activation_bytes_per_sample,
        }


# Classes made for network names, most recently used last. Bounded: every distinct name, a refused
# request's too, made one for the process's life (20k names held 44 MB in the API). A name evicted
# and seen again gets a new class, which nothing tells apart from the old one but identity.
NET_CLASSES_KEPT = 256
_CLASSES: OrderedDict[str, type[SpecNet]] = OrderedDict()


_CLASSES_LOCK = threading.Lock()  # the API validates networks on several threads


def _net_class(name: str) -> type[SpecNet]:
    with _CLASSES_LOCK:
        cls = _CLASSES.get(name)
        if cls is None:
            cls = type(name, (SpecNet,), {"__module__": "gradserve.networks", "__qualname__": name})
            _CLASSES[name] = cls
            while len(_CLASSES) > NET_CLASSES_KEPT:
                _CLASSES.popitem(last=False)
        else:
            _CLASSES.move_to_end(name)
        return cls


def label(layer: LayerBase, index: int) -> str:
    return f"'{layer.name}' ({layer.type})" if layer.name else f"layers[{index}] ({layer.type})"


def module_name(layer: LayerBase, index: int) -> str:
    return layer.name or f"{layer.type.lower()}_{index}"


def check_wiring(spec: NetworkSpec, loc: Loc = ("body",)) -> list[tuple[str, ...]]:
    """Resolve every layer's inputs to earlier output keys; refuse duplicates, forward references, cycles."""
    seen: dict[str, int] = {}
    resolved: list[tuple[str, ...]] = []
    for i, layer in enumerate(spec.layers):
        here = (*loc, "layers", i)
        if layer.name is not None:
            if layer.name == "input":
                raise InvalidInput('"input" is reserved for the network input; choose another name', (*here, "name"))
            if layer.name in seen:
                raise InvalidInput(
                    f"duplicate layer name '{layer.name}' (already used by layers[{seen[layer.name]}])",
                    (*here, "name"),
                )
            # An instance, not the class: ``training`` and ``_modules`` are set in __init__, and
            # add_module refuses them with a KeyError.
            if layer.kind == "module" and hasattr(_attribute_probe(), layer.name):
                raise InvalidInput(
                    f"'{layer.name}' clashes with an nn.Module attribute; choose another name", (*here, "name")
                )
        names = layer.inputs if layer.inputs is not None else (("input",) if i == 0 else (f"#{i - 1}",))
        keys = []
        for j, ref in enumerate(names):
            if ref.startswith("#") or ref == "input":
                keys.append(ref)
            elif ref in seen:
                keys.append(f"#{seen[ref]}")
            elif ref == layer.name:
                raise InvalidInput(f"layer {label(layer, i)} takes its own output: a cycle", (*here, "inputs", j))
            elif any(later.name == ref for later in spec.layers[i + 1 :]):
                raise InvalidInput(
                    f"layer {label(layer, i)} takes '{ref}', which is defined later; inputs may only name "
                    "earlier layers, so the graph cannot have cycles",
                    (*here, "inputs", j),
                )
            else:
                known = ", ".join(["input", *seen]) or "input"
                raise InvalidInput(
                    f"layer {label(layer, i)} takes unknown input '{ref}'; known: {known}", (*here, "inputs", j)
                )
        low, high = layer.arity
        if not low <= len(keys) <= (high if high is not None else len(keys)):
            want = f"{low}" if low == high else f"{low} to {high}" if high else f"at least {low}"
            raise InvalidInput(f"layer {label(layer, i)} takes {want} inputs, got {len(keys)}", (*here, "inputs"))
        if layer.name is not None:
            seen[layer.name] = i
        resolved.append(tuple(keys))
    return resolved


@functools.cache
def _attribute_probe() -> SpecNet:
    return SpecNet()


def _make_call(layer: LayerBase, module: nn.Module | None) -> Callable[[nn.Module, Tensors], torch.Tensor]:
    if isinstance(layer, L._Op):
        op, kw = layer.apply, torch_kwargs(layer)
        return lambda net, xs: op(net, xs, kw)
    assert module is not None, f"{layer.type} is a module: built before its call is made"
    if isinstance(layer, L.MultiheadAttention):
        select = layer.select
        return lambda net, xs: module(*(xs if len(xs) == 3 else (xs[0], xs[0], xs[0])))[select]
    if isinstance(layer, L._TupleModule):
        select = layer.select
        return lambda net, xs: module(*xs)[select]
    return lambda net, xs: module(*xs)


def build_network(spec: NetworkSpec, loc: Loc = ("body",)) -> SpecNet:
    """Construct the network on the current default device, modules in declared order.

    Call under ``torch.manual_seed(seed)`` for reproducible weights, or ``with torch.device("meta")``
    to allocate nothing.
    """
    wiring = check_wiring(spec, loc)
    net = _net_class(spec.name)()
    plan: list[Step] = []
    for i, (layer, keys) in enumerate(zip(spec.layers, wiring, strict=True)):
        module = None
        if isinstance(layer, L._Module):
            try:
                module = layer.torch_class(**torch_kwargs(layer))
            except (ValueError, AssertionError, TypeError, RuntimeError) as exc:
                raise InvalidInput(
                    f"layer {label(layer, i)} cannot be built: {first_line(exc)}", (*loc, "layers", i)
                ) from exc
            net.add_module(module_name(layer, i), module)
        plan.append(Step(i, f"#{i}", keys, _make_call(layer, module)))
    net._plan = tuple(_with_frees(plan))
    return net


def _with_frees(plan: list[Step]) -> list[Step]:
    last_use: dict[str, int] = {}
    for step in plan:
        for key in step.inputs:
            last_use[key] = step.index
    last = plan[-1].key
    frees: dict[int, list[str]] = {}
    for key, index in last_use.items():
        if key != last:
            frees.setdefault(index, []).append(key)
    return [Step(s.index, s.key, s.inputs, s.call, tuple(frees.get(s.index, ()))) for s in plan]


def validate_network(spec: NetworkSpec, settings: Settings, loc: Loc = ("body",)) -> NetworkSummary:
    """Build on the meta device and infer every layer's shape; raise ``InvalidInput`` naming the layer."""
    if len(spec.layers) > settings.max_layers:
        raise InvalidInput(
            f"{len(spec.layers)} layers exceed the limit of {settings.max_layers} (GRADSERVE_MAX_LAYERS)",
            (*loc, "layers"),
        )
    dtype = DTYPES[spec.input_dtype]
    # Checked in Python before the probe tensor exists: a huge shape overflows even a meta allocation.
    sample_bytes = math.prod(spec.input_shape) * torch.empty((), dtype=dtype).element_size()
    if sample_bytes > settings.max_activation_bytes:
        limit = settings.max_activation_bytes / 2**20
        raise InvalidInput(
            f"one sample of input_shape {list(spec.input_shape)} alone takes "
            f"{sample_bytes / 2**20:,.1f} MiB of activation memory; the limit is {limit:,.1f} MiB "
            "(GRADSERVE_MAX_ACTIVATION_BYTES)",
            (*loc, "input_shape"),
        )
    with torch.device("meta"):
        net = build_network(spec, loc)
    params: list[dict[str, Any]] = [
        {"name": n, "shape": list(p.shape), "numel": p.numel()} for n, p in net.named_parameters()
    ]
    num_elements = sum(int(p["numel"]) for p in params)
    if num_elements > settings.max_parameters:
        raise InvalidInput(
            f"the network has {num_elements:,} parameters; the limit is {settings.max_parameters:,} "
            "(GRADSERVE_MAX_PARAMETERS)",
            (*loc, "layers"),
        )
    net.eval()  # eval mode: batch statistics of a meta tensor mean nothing, and dropout would need an RNG
    values = {"input": torch.empty((PROBE_BATCH, *spec.input_shape), dtype=dtype, device="meta")}
    total = values["input"].numel() * values["input"].element_size()
    for step, layer in zip(net._plan, spec.layers, strict=True):
        xs = [values[k] for k in step.inputs]
        here = (*loc, "layers", step.index)
        check_layer_input(layer, label(layer, step.index), xs, here)
        try:
            out = step.call(net, xs)
        except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
            got = ", ".join(fmt_shape(x.shape, PROBE_BATCH) for x in xs)
            raise InvalidInput(
                f"layer {label(layer, step.index)} fails on input {got}: {first_line(exc)}", here
            ) from exc
        if not isinstance(out, torch.Tensor):
            raise InvalidInput(f"layer {label(layer, step.index)} does not return a tensor", here)
        values[step.key] = out
        total += out.numel() * out.element_size()
    out = values[net._plan[-1].key]
    if out.dim() == 0 or out.shape[0] != PROBE_BATCH:
        raise InvalidInput(
            f"the network's output {fmt_shape(out.shape, PROBE_BATCH)} lost the batch dimension; "
            "keep it first (e.g. flatten with start_dim=1)",
            (*loc, "layers", len(spec.layers) - 1),
        )
    per_sample = -(-total // PROBE_BATCH)
    check_activation_memory(per_sample, 1, settings, loc)
    return NetworkSummary(
        repr=repr(net),
        parameters=params,
        num_parameters=len(params),
        num_elements=num_elements,
        output_shape=list(out.shape[1:]),
        activation_bytes_per_sample=per_sample,
    )


def index_bound(layers: Sequence[dict[str, Any]]) -> tuple[int, str] | None:
    """``(num_embeddings, label)`` of the smallest Embedding that reads the network input directly.

    Indices outside ``[0, num_embeddings)`` fail deep inside PyTorch ("index out of range in self"),
    and on a GPU as a device-side assert that poisons the worker's CUDA context; callers check first.
    """
    found = [
        (layer["num_embeddings"], f"'{layer.get('name') or f'layers[{i}]'}' (Embedding)")
        for i, layer in enumerate(layers)
        if layer.get("type") == "Embedding"
        and (layer.get("inputs") == ["input"] or (i == 0 and not layer.get("inputs")))
    ]
    return min(found) if found else None


def check_indices(layers: Sequence[dict[str, Any]], low: int, high: int, loc: Loc, what: str = "input") -> None:
    bound = index_bound(layers)
    if bound is not None and (low < 0 or high >= bound[0]):
        raise InvalidInput(
            f"indices in {what} span {low}..{high}, but layer {bound[1]} has num_embeddings="
            f"{bound[0]}: indices must lie in [0, {bound[0]})",
            loc,
        )


def check_activation_memory(per_sample: int, batch_size: int, settings: Settings, loc: Loc) -> None:
    need = per_sample * batch_size
    if need > settings.max_activation_bytes:
        raise InvalidInput(
            f"estimated activation memory {need / 2**20:,.1f} MiB for a batch of {batch_size} exceeds the limit "
            f"of {settings.max_activation_bytes / 2**20:,.1f} MiB (GRADSERVE_MAX_ACTIVATION_BYTES)",
            loc,
        )
