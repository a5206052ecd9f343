"""Readable shape errors for the layers whose PyTorch messages are cryptic (or silent, on meta tensors).

Each check names the layer, what it expects and the shape it receives, with the batch shown as ``N``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.errors import InvalidInput
from models.spec import layers as L
from models.spec.layers import LayerBase


def fmt_shape(shape: Sequence[int], batch: int | None = None) -> str:
    dims = [str(d) for d in shape]
    if batch is not None and dims and shape[0] == batch:
        dims[0] = "N"
    return f"[{', '.join(dims)}]"


_CONV_DIMS = {"Conv1d": 1, "Conv2d": 2, "Conv3d": 3, "ConvTranspose1d": 1, "ConvTranspose2d": 2}
_BN_DIMS = {"BatchNorm1d": (2, 3), "BatchNorm2d": (4,), "BatchNorm3d": (5,)}
_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}
# Ops that PyTorch runs on integer tensors on CPU and CUDA alike. The meta device checks no dtypes,
# so without this list e.g. gelu or softmax on int64 input passed validation and failed at runtime.
_INT_OPS = {
    "relu",
    "relu6",
    "tanh",
    "sigmoid",
    "max_pool2d",
    "flatten",
    "reshape",
    "view",
    "permute",
    "transpose",
    "unsqueeze",
    "squeeze",
    "add",
    "mul",
    "cat",
}
# Layers whose ``dim`` the meta device does not range-check (softmax on meta accepts any dim).
_DIM_LAYERS = {"softmax", "log_softmax", "Softmax", "LogSoftmax"}


def check_layer_input(layer: LayerBase, name: str, xs: Sequence[torch.Tensor], loc: tuple) -> None:
    """Raise ``InvalidInput`` when ``layer`` cannot take ``xs``; silent when PyTorch's own error will do."""
    from models.nn.build import PROBE_BATCH  # the builder imports us; the probe batch is its constant

    x = xs[0]
    got = fmt_shape(x.shape, PROBE_BATCH)
    if layer.kind == "module" and layer.type != "Embedding" and not x.is_floating_point():
        raise InvalidInput(f"layer {name} expects floating-point input but receives {x.dtype} {got}", loc)
    if layer.kind == "op" and layer.type not in _INT_OPS and any(not t.is_floating_point() for t in xs):
        raise InvalidInput(
            f"layer {name} expects floating-point input but receives {x.dtype} {got}; integer "
            f"input can only pass through {', '.join(sorted(_INT_OPS))} (e.g. on its way to an "
            "Embedding)",
            loc,
        )
    if layer.type in _DIM_LAYERS and not -x.dim() <= layer.dim < x.dim():
        raise InvalidInput(
            f"layer {name} has dim={layer.dim}, out of range for its {x.dim()}-D {got} input "
            f"(use {-x.dim()}..{x.dim() - 1})",
            loc,
        )
    if isinstance(layer, L.Linear) and x.dim() >= 1 and x.shape[-1] != layer.in_features:
        msg = (
            f"layer {name} expects {layer.in_features} input features (the last dimension) "
            f"but receives {x.shape[-1]} from a {got} tensor"
        )
        if x.dim() > 2:
            flat = x[0].numel()
            msg += f'; flattening it with {{"type": "flatten", "start_dim": 1}} would give {flat} features'
        raise InvalidInput(msg, loc)
    if layer.type in _CONV_DIMS:
        nd = _CONV_DIMS[layer.type]
        if x.dim() != nd + 2:
            raise InvalidInput(
                f"layer {name} expects a {nd + 2}-D input [N, C, {_SPATIAL[nd]}] but receives a {x.dim()}-D "
                f"{got} tensor",
                loc,
            )
        if x.shape[1] != layer.in_channels:
            raise InvalidInput(
                f"layer {name} expects {layer.in_channels} input channels (dim 1) but receives {x.shape[1]} "
                f"from a {got} tensor",
                loc,
            )
    if layer.type in _BN_DIMS:
        if x.dim() not in _BN_DIMS[layer.type]:
            want = " or ".join(f"{d}-D" for d in _BN_DIMS[layer.type])
            raise InvalidInput(f"layer {name} expects a {want} input but receives a {x.dim()}-D {got} tensor", loc)
        if x.shape[1] != layer.num_features:
            raise InvalidInput(
                f"layer {name} expects {layer.num_features} features (dim 1) but receives {x.shape[1]} "
                f"from a {got} tensor",
                loc,
            )
    if isinstance(layer, L.GroupNorm) and (x.dim() < 2 or x.shape[1] != layer.num_channels):
        raise InvalidInput(
            f"layer {name} expects {layer.num_channels} channels (dim 1) but receives a {got} tensor", loc
        )
    if isinstance(layer, L.LayerNorm):
        want = (layer.normalized_shape,) if isinstance(layer.normalized_shape, int) else layer.normalized_shape
        if tuple(x.shape[-len(want) :]) != tuple(want):
            raise InvalidInput(
                f"layer {name} normalizes over the last dimensions {list(want)} but receives a {got} tensor", loc
            )
    if isinstance(layer, L.Embedding) and x.is_floating_point():
        raise InvalidInput(
            f"layer {name} expects integer indices but receives {x.dtype} {got}; set the network's "
            '"input_dtype": "int64"',
            loc,
        )
    if isinstance(layer, (L.add, L.mul)):
        try:
            torch.broadcast_shapes(*(t.shape for t in xs))
        except RuntimeError:
            shapes = ", ".join(fmt_shape(t.shape, PROBE_BATCH) for t in xs)
            raise InvalidInput(f"layer {name} cannot broadcast its inputs {shapes} together", loc) from None
    if isinstance(layer, L.cat):
        dims = {t.dim() for t in xs}
        d = layer.dim % x.dim() if x.dim() else 0
        others = {tuple(s for k, s in enumerate(t.shape) if k != d) for t in xs}
        if len(dims) > 1 or len(others) > 1:
            shapes = ", ".join(fmt_shape(t.shape, PROBE_BATCH) for t in xs)
            raise InvalidInput(f"layer {name} cannot concatenate {shapes} along dim {layer.dim}", loc)
