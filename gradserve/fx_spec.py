"""A plain ``nn.Module`` as our network spec, by tracing its forward with ``torch.fx``.

Modules of the catalogue become named layers (their constructor arguments read back from the instance),
functional ops (``F.relu``, ``torch.flatten``, ``+``, ``torch.cat``, ``.view`` ...) become functional layers,
and a layer's ``inputs`` name earlier layers where the data flow is not a plain chain. Whatever the
catalogue cannot express is a ``SpecError`` naming the fx node, its source op and the nearest supported
op, raised before anything is sent. The server validates the spec again; this side only emits JSON.
"""

from __future__ import annotations

import difflib
import operator
import re
from typing import Any

import torch
import torch.fx
from torch import nn

from gradserve.errors import SpecError
from gradserve.fx_catalogue import (
    FUNCTION_OPS,
    IGNORED,
    METHOD_OPS,
    MUST_BE,
    SUPPORTED_NAMES,
    TENSOR_ARGS,
    json_value,
    module_fields,
    same_construction,
)
from gradserve.protocol.catalogue import MODULE_FIELDS, TUPLE_MODULES

# A layer name, as models.spec.types.LAYER_NAME says (a unit test keeps the two equal): the client does not
# import the server's models, which need pydantic.
IDENTIFIER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,63}|[0-9]{1,4})$")


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    if node.op == "call_method":
        return f"Tensor.{target}"
    if node.op == "call_module":
        return f"self.{target}"  # the attribute: its class is in the module, not in the node
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    prefix = {"torch.nn.functional": "F", "_operator": "operator", "operator": "operator"}.get(module, "torch")
    return f"{prefix}.{name}"


def _nearest(name: str) -> str:
    bare = name.rsplit(".", 1)[-1].lower()
    close = difflib.get_close_matches(bare, [n.lower() for n in SUPPORTED_NAMES], n=1, cutoff=0.0)
    lookup = {n.lower(): n for n in SUPPORTED_NAMES}
    return lookup[close[0]] if close else "relu"


def _refuse(node: torch.fx.Node, why: str, source: str | None = None, nearest: str | None = None) -> SpecError:
    """``nearest=""`` when the fault is not the op itself (its input is), so no op is suggested."""
    source = source or _op_name(node)
    hint = "" if nearest == "" else f"; the nearest supported op is {nearest or _nearest(source)}"
    return SpecError(f"fx node '{node.name}' ({node.op} {source}) {why}{hint}", node=node.name, op=source)


# --- tracing ------------------------------------------------------------------------------------------------------


class _Tracer(torch.fx.Tracer):
    """fx's tracer, with Python control flow on a traced value named by its node."""

    def to_bool(self, obj: torch.fx.Proxy) -> bool:
        raise _refuse(
            obj.node,
            "is used as a Python bool (an `if` or `while` on tensor values); the network must not branch on data",
        )

    def iter(self, obj: torch.fx.Proxy) -> Any:
        raise _refuse(obj.node, "is iterated in Python; unpack shapes by index, e.g. x.size(0)")

    def keys(self, obj: torch.fx.Proxy) -> Any:
        raise _refuse(obj.node, "is used with ** unpacking")


def trace(net: nn.Module) -> torch.fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(net)
    except SpecError:
        raise
    except Exception as exc:  # fx's own refusals (TraceError, TypeError on a Proxy) name no node
        raise SpecError(f"torch.fx cannot trace {type(net).__name__}.forward: {exc}", node=None, op=None) from exc
    gm = torch.fx.GraphModule(tracer.root, graph, type(net).__name__)
    gm.graph.eliminate_dead_code()
    return gm


# --- the conversion -----------------------------------------------------------------------------------------------


def _bind(
    node: torch.fx.Node, params: tuple[str, ...], rest: tuple[Any, ...], kwargs: dict[str, Any], source: str
) -> dict[str, Any]:
    """The call's non-tensor arguments by parameter name; ``*shape`` takes the rest of the positionals."""
    bound: dict[str, Any] = {}
    if params and params[0].startswith("*"):
        values = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
        bound[params[0][1:]] = list(values) if values else kwargs.pop(params[0][1:], [])
    else:
        if len(rest) > len(params):
            raise _refuse(node, f"has {len(rest)} positional arguments where the catalogue knows {len(params)}", source)
        bound.update(zip(params, rest, strict=False))
    for key, value in kwargs.items():
        if key not in params and f"*{key}" not in params:
            raise _refuse(node, f"takes an argument '{key}' the catalogue does not carry", source)
        bound[key.lstrip("*")] = value
    return bound


def _size_batch(node: torch.fx.Node, value: Any) -> Any:
    """``x.size(0)`` / ``x.shape[0]`` inside a shape: the batch dimension, which the spec writes -1."""
    if isinstance(value, (list, tuple)):
        return [_size_batch(node, v) for v in value]
    if isinstance(value, torch.fx.Node):
        batch = (value.op == "call_method" and value.target == "size" and value.args[1:] == (0,)) or (
            value.op == "call_function"
            and value.target is operator.getitem
            and value.args[1] == 0
            and isinstance(value.args[0], torch.fx.Node)
            and value.args[0].op == "call_function"
            and value.args[0].target is getattr
            and value.args[0].args[1] == "shape"
        )
        if batch:
            return -1
        raise _refuse(node, f"takes the traced value '{value.name}' as an argument; use constants (or x.size(0))")
    return value


class _Converter:
    def __init__(self, net: nn.Module, gm: torch.fx.GraphModule) -> None:
        self.net = net
        self.gm = gm
        self.layers: list[dict[str, Any]] = []
        self.names: dict[str, str] = {}  # fx node name -> the name its output has in the spec
        self.used_modules: set[str] = set()
        self.input_name = "input"

    def convert(self) -> dict[str, Any]:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise SpecError(
                f"{type(self.net).__name__}.forward takes {len(placeholders)} inputs; a network takes one tensor",
                node=None,
                op=None,
            )
        self.names[placeholders[0].name] = "input"
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                self._output(node)
            elif node.op == "call_module":
                self._module(node)
            elif node.op in ("call_function", "call_method"):
                self._function(node)
            else:
                raise _refuse(
                    node,
                    "reads a parameter or buffer outside any layer (is the network itself one torch.nn layer?)",
                    f"self.{node.target}",
                    "a catalogue module holding it, e.g. Linear",
                )
        self._wire()
        return {"name": type(self.net).__name__, "layers": self.layers}

    def _output(self, node: torch.fx.Node) -> None:
        value = node.args[0]
        if not isinstance(value, torch.fx.Node):
            raise _refuse(node, "returns more than one tensor; a network returns one", "return")
        if not self.layers or self.names.get(value.name) != self.layers[-1]["_key"]:
            raise _refuse(node, "returns a value that is not the last layer computed", "return")

    def _inputs(self, node: torch.fx.Node, args: tuple[Any, ...]) -> list[str]:
        keys = []
        for arg in args:
            if not isinstance(arg, torch.fx.Node) or arg.name not in self.names:
                what = getattr(arg, "name", repr(arg))
                if isinstance(arg, torch.fx.Node) and arg.op == "call_function" and "getitem" in str(arg.target):
                    raise _refuse(
                        node,
                        f"takes '{what}', which indexes a tensor (x[...]); the catalogue has no slicing, so such a "
                        'module travels as a torch.export program (remote(..., format="auto"), the default)',
                        nearest="",
                    )
                raise _refuse(node, f"takes '{what}' as a tensor input, which is not the output of a layer", nearest="")
            keys.append(self.names[arg.name])
        return keys

    def _add(self, node: torch.fx.Node, layer: dict[str, Any], inputs: list[str]) -> None:
        self.names[node.name] = node.name
        self.layers.append({**layer, "_key": node.name, "_inputs": inputs})

    def _module(self, node: torch.fx.Node) -> None:
        target = str(node.target)
        module = self.gm.get_submodule(target)
        kind = type(module).__name__
        if not IDENTIFIER.match(target):
            raise _refuse(
                node,
                f"is the module '{target}', inside a container or submodule or not a Python name; the spec holds "
                "modules as direct attributes of the network (self.conv1 = ...) or as the items of one top-level "
                "nn.Sequential, so define them on the network itself",
                kind,
            )
        if kind not in MODULE_FIELDS and not isinstance(module, nn.TransformerEncoderLayer):
            raise _refuse(node, f"is a {kind}, which is not in the catalogue", kind)
        if target in self.used_modules:
            raise _refuse(node, f"calls module '{target}' a second time; the spec has each module once", kind)
        self.used_modules.add(target)
        try:
            fields = module_fields(module)
        except ValueError as exc:
            raise _refuse(node, f"cannot be expressed: {exc}", kind) from exc
        difference = same_construction(module, fields)
        if difference:
            raise _refuse(node, f"has arguments the catalogue does not carry: {difference}", kind)
        if node.kwargs:
            raise _refuse(node, f"is called with keyword arguments {sorted(node.kwargs)}", kind)
        inputs = self._inputs(node, node.args)
        self._add(node, {"name": target, "type": kind, **fields}, inputs)
        self.names[node.name] = target
        self.layers[-1]["_key"] = target

    def _function(self, node: torch.fx.Node) -> None:
        if node.op == "call_function" and node.target is operator.getitem:
            return self._getitem(node)
        if (node.op == "call_method" and node.target == "size") or node.target is getattr:
            return self._shape_read(node)
        table = METHOD_OPS.get(str(node.target)) if node.op == "call_method" else FUNCTION_OPS.get(node.target)
        if table is None:
            raise _refuse(node, "is not in the catalogue")
        kind, params, fields = table
        source = _op_name(node)
        args = node.args
        if kind == "cat":
            tensors, rest = args[0], args[1:]
            if not isinstance(tensors, (list, tuple)):
                raise _refuse(node, "takes a sequence of tensors", source)
            inputs = self._inputs(node, tuple(tensors))
        else:
            count = TENSOR_ARGS.get(kind, 1)
            inputs = self._inputs(node, args[:count])
            rest = args[count:]
        bound = _bind(node, params, tuple(rest), dict(node.kwargs), source)
        layer: dict[str, Any] = {"type": kind}
        for key, value in bound.items():
            if key in IGNORED:
                continue
            if key in MUST_BE:
                if value != MUST_BE[key]:
                    raise _refuse(node, f"sets {key}={value!r}, which the catalogue does not carry", source)
                continue
            if key in fields and value is not None:
                layer[key] = json_value(_size_batch(node, value))
        if kind in ("view", "reshape") and layer["shape"].count(-1) > 1:
            if layer["shape"] != [-1, -1]:
                raise _refuse(node, "has two unknown (-1) dimensions besides the batch; spell the others out", source)
            layer = {"type": "flatten", "start_dim": 1}  # x.view(x.size(0), -1): the same numbers
        if kind in ("softmax", "log_softmax", "mean", "squeeze", "unsqueeze") and "dim" not in layer:
            raise _refuse(node, "needs an explicit dim", source)
        self._add(node, layer, inputs)

    def _getitem(self, node: torch.fx.Node) -> None:
        source, index = node.args[0], node.args[1]
        if isinstance(source, torch.fx.Node) and source.op == "call_module":
            layer = next((lay for lay in self.layers if lay.get("name") == source.target), None)
            if layer is not None and layer["type"] in TUPLE_MODULES and isinstance(index, int):
                if len(source.users) != 1 or self.layers[-1] is not layer:
                    raise _refuse(node, "picks from a tuple output used more than once", "operator.getitem")
                layer["select"] = index
                self.names[node.name] = self.names[source.name]
                return
        if node.users and all(u.op != "output" for u in node.users) and source is not None:
            return  # a shape read such as x.shape[0]: used only inside other ops' arguments
        raise _refuse(node, "indexes a tensor; the catalogue has no slicing", "operator.getitem")

    def _shape_read(self, node: torch.fx.Node) -> None:
        """``x.size(0)`` or ``x.shape``: consumed where a shape argument is read (``_size_batch``)."""

    def _wire(self) -> None:
        """``inputs`` only where a layer does not take the previous layer's output; ``name`` where referenced."""
        referenced: set[str] = set()
        keys: list[str] = []
        previous = "input"
        for layer in self.layers:
            inputs = layer.pop("_inputs")
            keys.append(layer.pop("_key"))
            if inputs != [previous]:
                layer["inputs"] = inputs
                referenced.update(inputs)
            previous = keys[-1]
        for layer, key in zip(self.layers, keys, strict=True):
            if key in referenced and "name" not in layer:
                layer["name"] = key


def to_spec(net: nn.Module, input_shape: list[int] | None = None, input_dtype: str | None = None) -> dict[str, Any]:
    """The network spec of ``net`` (``input_shape`` per sample, without the batch dimension)."""
    if not isinstance(net, nn.Module):
        raise TypeError(f"remote() takes an nn.Module instance, not {type(net).__name__}")
    converter = _Converter(net, trace(net))
    spec = converter.convert()
    if input_shape is not None:
        spec["input_shape"] = list(input_shape)
    if input_dtype is None and spec["layers"] and spec["layers"][0]["type"] == "Embedding":
        input_dtype = "int64"
    if input_dtype is not None and input_dtype != "float32":
        spec["input_dtype"] = input_dtype
    return spec


__all__ = ["MODULE_FIELDS", "SpecError", "module_fields", "to_spec", "trace"]


def optimizer_spec(
    optimizer: type[torch.optim.Optimizer] | str | dict[str, Any] | None, args: dict[str, Any]
) -> dict[str, Any] | None:
    """``torch.optim.SGD`` + ``{"lr": 0.01}`` (or ``"SGD"``, or a ready dict) as our optimizer spec."""
    if optimizer is None:
        if args:
            raise TypeError(f"optimizer arguments {sorted(args)} given without an optimizer")
        return None
    if isinstance(optimizer, dict):
        return {**optimizer, **args}
    name = optimizer if isinstance(optimizer, str) else optimizer.__name__
    return {"type": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}}
