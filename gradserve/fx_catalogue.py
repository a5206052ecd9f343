"""What ``remote()`` can express: the catalogue's modules (with the fields read back from an instance)
and the functional ops and tensor methods that map onto functional layers."""

from __future__ import annotations

import inspect
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradserve.protocol.catalogue import MODULE_FIELDS

# --- modules ------------------------------------------------------------------------------------------------------

_MAXPOOL = MODULE_FIELDS["MaxPool2d"]
_AVGPOOL = MODULE_FIELDS["AvgPool2d"]


def _bias(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return module.in_proj_bias is not None
    return getattr(module, "bias", None) is not None


def _encoder_layer(m: nn.TransformerEncoderLayer) -> dict[str, Any]:
    activation = getattr(m, "activation_relu_or_gelu", 0)
    if activation not in (1, 2):
        raise ValueError("its activation is neither relu nor gelu")
    return {
        "d_model": m.self_attn.embed_dim,
        "nhead": m.self_attn.num_heads,
        "dim_feedforward": m.linear1.out_features,
        "dropout": m.dropout.p,
        "activation": "relu" if activation == 1 else "gelu",
        "layer_norm_eps": m.norm1.eps,
        "batch_first": m.self_attn.batch_first,
        "norm_first": m.norm_first,
        "bias": m.linear1.bias is not None,
    }


def module_fields(module: nn.Module) -> dict[str, Any]:
    """The spec fields of a catalogue module instance, as JSON values."""
    kind = type(module).__name__
    if isinstance(module, nn.TransformerEncoderLayer):
        return _encoder_layer(module)
    fields = {f: _bias(module) if f == "bias" else getattr(module, f) for f in MODULE_FIELDS[kind]}
    defaults = {
        name: p.default
        for name, p in inspect.signature(type(module).__init__).parameters.items()
        if p.default is not p.empty
    }
    return {k: json_value(v) for k, v in fields.items() if k not in defaults or not _is_default(v, defaults[k])}


def _is_default(value: Any, default: Any) -> bool:
    """``stride=(1, 1)`` is the default ``1`` spread over the dimensions; leaving it out keeps specs short."""
    if isinstance(value, (tuple, list)) and not isinstance(default, (tuple, list)):
        return bool(value) and all(v == default for v in value)
    return bool(value == default) and type(value) is type(default)


def json_value(value: Any) -> Any:
    if isinstance(value, (tuple, list, torch.Size)):
        return [json_value(v) for v in value]
    return value


def _norm(text: str) -> str:
    """A repr without the empty-argument leftovers a rebuilt module may print differently."""
    return text.replace(", )", ")").replace("(, ", "(")


def same_construction(module: nn.Module, fields: dict[str, Any]) -> str | None:
    """Rebuilt from ``fields`` on the meta device, does the module print the same? (``inplace`` aside:
    it changes no number). A difference means an argument the catalogue does not carry."""
    cls = type(module)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    with torch.device("meta"):
        rebuilt = cls(**kwargs)
    want, got = repr(module).replace("inplace=True", ""), repr(rebuilt).replace("inplace=True", "")
    return None if _norm(want) == _norm(got) else f"it prints as {repr(module)!s} but the spec can express {got}"


# --- functional ops -----------------------------------------------------------------------------------------------

# Spec type -> (parameter names of the torch call after the tensor input(s), spec fields among them).
FUNCTION_OPS: dict[Any, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    F.relu: ("relu", ("inplace",), ()),
    torch.relu: ("relu", (), ()),
    F.relu6: ("relu6", ("inplace",), ()),
    F.gelu: ("gelu", ("approximate",), ("approximate",)),
    F.silu: ("silu", ("inplace",), ()),
    torch.tanh: ("tanh", (), ()),
    F.tanh: ("tanh", (), ()),
    torch.sigmoid: ("sigmoid", (), ()),
    F.sigmoid: ("sigmoid", (), ()),
    F.leaky_relu: ("leaky_relu", ("negative_slope", "inplace"), ("negative_slope",)),
    F.elu: ("elu", ("alpha", "inplace"), ("alpha",)),
    F.softmax: ("softmax", ("dim", "_stacklevel", "dtype"), ("dim",)),
    torch.softmax: ("softmax", ("dim", "dtype"), ("dim",)),
    F.log_softmax: ("log_softmax", ("dim", "_stacklevel", "dtype"), ("dim",)),
    torch.log_softmax: ("log_softmax", ("dim", "dtype"), ("dim",)),
    F.max_pool1d: ("max_pool1d", (*_MAXPOOL, "return_indices"), _MAXPOOL),
    F.max_pool2d: ("max_pool2d", (*_MAXPOOL, "return_indices"), _MAXPOOL),
    F.avg_pool1d: ("avg_pool1d", _AVGPOOL, _AVGPOOL),
    F.avg_pool2d: ("avg_pool2d", (*_AVGPOOL, "divisor_override"), _AVGPOOL),
    F.adaptive_avg_pool2d: ("adaptive_avg_pool2d", ("output_size",), ("output_size",)),
    torch.flatten: ("flatten", ("start_dim", "end_dim"), ("start_dim", "end_dim")),
    torch.reshape: ("reshape", ("shape",), ("shape",)),
    torch.permute: ("permute", ("dims",), ("dims",)),
    torch.transpose: ("transpose", ("dim0", "dim1"), ("dim0", "dim1")),
    torch.unsqueeze: ("unsqueeze", ("dim",), ("dim",)),
    torch.squeeze: ("squeeze", ("dim",), ("dim",)),
    torch.mean: ("mean", ("dim", "keepdim", "dtype"), ("dim", "keepdim")),
    F.dropout: ("dropout", ("p", "training", "inplace"), ("p",)),
    operator.add: ("add", (), ()),
    torch.add: ("add", ("alpha",), ()),
    operator.mul: ("mul", (), ()),
    torch.mul: ("mul", (), ()),
    operator.matmul: ("matmul", (), ()),
    torch.matmul: ("matmul", (), ()),
    torch.cat: ("cat", ("dim",), ("dim",)),
}
# Tensor methods: ``x.view(...)`` and the like. Shape arguments may come spread out (``x.view(-1, 400)``).
METHOD_OPS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "relu": ("relu", (), ()),
    "tanh": ("tanh", (), ()),
    "sigmoid": ("sigmoid", (), ()),
    "softmax": ("softmax", ("dim",), ("dim",)),
    "log_softmax": ("log_softmax", ("dim",), ("dim",)),
    "flatten": ("flatten", ("start_dim", "end_dim"), ("start_dim", "end_dim")),
    "view": ("view", ("*shape",), ("shape",)),
    "reshape": ("reshape", ("*shape",), ("shape",)),
    "permute": ("permute", ("*dims",), ("dims",)),
    "transpose": ("transpose", ("dim0", "dim1"), ("dim0", "dim1")),
    "unsqueeze": ("unsqueeze", ("dim",), ("dim",)),
    "squeeze": ("squeeze", ("dim",), ("dim",)),
    "mean": ("mean", ("dim", "keepdim", "dtype"), ("dim", "keepdim")),
    "add": ("add", ("alpha",), ()),
    "mul": ("mul", (), ()),
    "matmul": ("matmul", (), ()),
}
# Arguments that change nothing in the numbers (``inplace``) or must keep their default to be expressible.
IGNORED = {"inplace": None, "_stacklevel": None, "training": None}
MUST_BE = {"return_indices": False, "dtype": None, "divisor_override": None, "alpha": 1}
# Tensor inputs an op takes before its other arguments.
TENSOR_ARGS = {"add": 2, "mul": 2, "matmul": 2}
SUPPORTED_NAMES = sorted(
    {getattr(f, "__name__", str(f)) for f in FUNCTION_OPS} | set(METHOD_OPS) | set(MODULE_FIELDS) | {"getitem"}
)
