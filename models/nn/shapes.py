"""Readable shape errors for the layers whose PyTorch messages are cryptic (or silent, on meta tensors).

Each check names the layer, what it expects and the shape it receives, with the batch shown as ``N``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.errors import InvalidInput, Loc
from models.spec import layers as L
from models.spec.layers import LayerBase


def fmt_shape(shape: Sequence[int], batch: int | None = None) -> str:
    dims = [str(d) for d in shape]
    if batch is not None and dims and shape[0] == batch:
        dims[0] = "N"
    return f"[{', '.join(dims)}]"


_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}
_INT_OPS = sorted(c.__name__ for c in L.LAYER_TYPES if c.takes_int and c.kind == "op")
# Shape inference runs a batch of two, so a layer that mixes up the batch dimension is caught.
PROBE_BATCH = 2
# Layers whose ``dim`` the meta device does not range-check (softmax on meta accepts any dim).
_DIM_LAYERS = (L.softmax, L.log_softmax, L.Softmax, L.LogSoftmax)


def check_layer_input(layer: LayerBase, name: str, xs: Sequence[torch.Tensor], loc: Loc) -> None:
    """Raise ``InvalidInput`` when ``layer`` cannot take ``xs``; silent when PyTorch's own error will do."""
    x = xs[0]
    got = fmt_shape(x.shape, PROBE_BATCH)
    if layer.kind == "module" and layer.type != "Embedding" and not x.is_floating_point():
        raise InvalidInput(f"layer {name} expects floating-point input but receives {x.dtype} {got}", loc)
    if layer.kind == "op" and not layer.takes_int and any(not t.is_floating_point() for t in xs):
        raise InvalidInput(
            f"layer {name} expects floating-point input but receives {x.dtype} {got}; integer "
            f"input can only pass through {', '.join(_INT_OPS)} (e.g. on its way to an "
            "Embedding)",
            loc,
        )
    if isinstance(layer, _DIM_LAYERS) and not -x.dim() <= layer.dim < x.dim():
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
    if isinstance(layer, (L._ConvBase, L._ConvTransposeBase)):
        nd = layer.spatial_dims
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
    if isinstance(layer, L._BatchNormBase):
        if x.dim() not in layer.input_dims:
            want = " or ".join(f"{d}-D" for d in layer.input_dims)
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
        norm = layer.normalized_shape
        last: tuple[int, ...] = (norm,) if isinstance(norm, int) else tuple(norm)
        if tuple(x.shape[-len(last) :]) != last:
            raise InvalidInput(
                f"layer {name} normalizes over the last dimensions {list(last)} but receives a {got} tensor", loc
            )
    if isinstance(layer, L.Embedding) and x.is_floating_point():
        raise InvalidInput(
            f"layer {name} expects integer indices but receives {x.dtype} {got}; set the network's "
            '"input_dtype": "int64"',
            loc,
        )
    if isinstance(layer, (L.add, L.mul)):
        try:
            torch.broadcast_shapes(*(t.shape for t in xs))  # type: ignore[no-untyped-call]
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
