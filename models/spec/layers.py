"""The closed catalogue of layers a network spec may use, one pydantic model per layer type.

``CamelCase`` types are ``torch.nn`` modules (named children, own parameters, shown in the repr);
``lower_snake`` types are ``torch.nn.functional``/``torch`` ops (no parameters, absent from the repr).
Field names and defaults are PyTorch's own, so a spec reads like the constructor call it stands for.

Each class is the whole of its layer type: a module names its ``torch_class``, an op carries its
``apply``; the builder, the shape checks and the union below read them from here. Adding a layer type
is adding one class to this file.
"""

from __future__ import annotations

import functools
import operator
from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt
from torch import nn

from models.spec.types import MAX_SIZE, Dim, LayerName, NonNeg, Pad, Pos, PosFloat, Prob, Size

Tensors = Sequence[torch.Tensor]
# Filled as the classes below are defined, in their order: the discriminated union is built from it.
_CATALOGUE: list[type[_Layer]] = []


class _Layer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # "module": a torch.nn child; "op": a functional op. Read by the builder, never sent on the wire.
    kind: ClassVar[str] = "op"
    # How many inputs the layer takes: (min, max); None is unbounded.
    arity: ClassVar[tuple[int, int | None]] = (1, 1)

    # Ops that PyTorch runs on integer tensors on CPU and CUDA alike. The meta device checks no dtypes,
    # so without this e.g. gelu or softmax on int64 input passed validation and failed at runtime.
    takes_int: ClassVar[bool] = False

    type: str  # every concrete layer narrows it to its own Literal, the union's discriminator
    name: LayerName | None = Field(default=None, description="Labels the output; for a module, its attribute name.")
    inputs: tuple[LayerName, ...] | None = Field(
        default=None, description='Earlier layer names (or "input"); default: the previous layer\'s output.'
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "type" in cls.__annotations__:
            _CATALOGUE.append(cls)


class _Op(_Layer):
    """A functional op: no parameters, absent from the repr; the builder calls its ``apply``."""

    @abstractmethod
    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        """The op on its inputs ``xs`` with the spec's keywords ``kw`` (``net`` gives ``training``)."""


class _Module(_Layer):
    kind: ClassVar[str] = "module"
    torch_class: ClassVar[type[nn.Module]]


class _TupleModule(_Module):
    select: NonNeg = Field(default=0, description="Which element of the module's tuple output to pass on.")


# --- torch.nn modules -------------------------------------------------------------------------------------------


class Linear(_Module):
    type: Literal["Linear"]
    torch_class = nn.Linear
    in_features: Pos
    out_features: Pos
    bias: StrictBool = True


class _ConvBase(_Module):
    spatial_dims: ClassVar[int]
    in_channels: Pos
    out_channels: Pos
    kernel_size: Size
    stride: Size = 1
    padding: Pad | Literal["same", "valid"] = 0
    dilation: Size = 1
    groups: Pos = 1
    bias: StrictBool = True
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"


class Conv1d(_ConvBase):
    type: Literal["Conv1d"]
    spatial_dims = 1
    torch_class = nn.Conv1d


class Conv2d(_ConvBase):
    type: Literal["Conv2d"]
    spatial_dims = 2
    torch_class = nn.Conv2d


class Conv3d(_ConvBase):
    type: Literal["Conv3d"]
    spatial_dims = 3
    torch_class = nn.Conv3d


class _ConvTransposeBase(_Module):
    spatial_dims: ClassVar[int]
    in_channels: Pos
    out_channels: Pos
    kernel_size: Size
    stride: Size = 1
    padding: Pad = 0
    output_padding: Pad = 0
    groups: Pos = 1
    bias: StrictBool = True
    dilation: Size = 1


class ConvTranspose1d(_ConvTransposeBase):
    type: Literal["ConvTranspose1d"]
    spatial_dims = 1
    torch_class = nn.ConvTranspose1d


class ConvTranspose2d(_ConvTransposeBase):
    type: Literal["ConvTranspose2d"]
    spatial_dims = 2
    torch_class = nn.ConvTranspose2d


class _MaxPoolBase(_Module):
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    dilation: Size = 1
    ceil_mode: StrictBool = False


class MaxPool1d(_MaxPoolBase):
    type: Literal["MaxPool1d"]
    torch_class = nn.MaxPool1d


class MaxPool2d(_MaxPoolBase):
    type: Literal["MaxPool2d"]
    torch_class = nn.MaxPool2d


class _AvgPoolBase(_Module):
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    ceil_mode: StrictBool = False
    count_include_pad: StrictBool = True


class AvgPool1d(_AvgPoolBase):
    type: Literal["AvgPool1d"]
    torch_class = nn.AvgPool1d


class AvgPool2d(_AvgPoolBase):
    type: Literal["AvgPool2d"]
    torch_class = nn.AvgPool2d


class AdaptiveAvgPool1d(_Module):
    type: Literal["AdaptiveAvgPool1d"]
    torch_class = nn.AdaptiveAvgPool1d
    output_size: Size


class AdaptiveAvgPool2d(_Module):
    type: Literal["AdaptiveAvgPool2d"]
    torch_class = nn.AdaptiveAvgPool2d
    output_size: Size


class AdaptiveMaxPool2d(_Module):
    type: Literal["AdaptiveMaxPool2d"]
    torch_class = nn.AdaptiveMaxPool2d
    output_size: Size


class _BatchNormBase(_Module):
    input_dims: ClassVar[tuple[int, ...]]  # the batch dimension included
    num_features: Pos
    eps: PosFloat = 1e-5
    momentum: Prob | None = 0.1
    affine: StrictBool = True
    track_running_stats: StrictBool = True


class BatchNorm1d(_BatchNormBase):
    type: Literal["BatchNorm1d"]
    input_dims = (2, 3)
    torch_class = nn.BatchNorm1d


class BatchNorm2d(_BatchNormBase):
    type: Literal["BatchNorm2d"]
    input_dims = (4,)
    torch_class = nn.BatchNorm2d


class BatchNorm3d(_BatchNormBase):
    type: Literal["BatchNorm3d"]
    input_dims = (5,)
    torch_class = nn.BatchNorm3d


class LayerNorm(_Module):
    type: Literal["LayerNorm"]
    torch_class = nn.LayerNorm
    normalized_shape: Size
    eps: PosFloat = 1e-5
    elementwise_affine: StrictBool = True
    bias: StrictBool = True


class GroupNorm(_Module):
    type: Literal["GroupNorm"]
    torch_class = nn.GroupNorm
    num_groups: Pos
    num_channels: Pos
    eps: PosFloat = 1e-5
    affine: StrictBool = True


class Dropout(_Module):
    type: Literal["Dropout"]
    torch_class = nn.Dropout
    p: Prob = 0.5


class Dropout2d(_Module):
    type: Literal["Dropout2d"]
    torch_class = nn.Dropout2d
    p: Prob = 0.5


class Embedding(_Module):
    type: Literal["Embedding"]
    torch_class = nn.Embedding
    num_embeddings: Pos
    embedding_dim: Pos
    padding_idx: Annotated[StrictInt, Field(ge=-MAX_SIZE, le=MAX_SIZE)] | None = None


class ReLU(_Module):
    type: Literal["ReLU"]
    torch_class = nn.ReLU


class ReLU6(_Module):
    type: Literal["ReLU6"]
    torch_class = nn.ReLU6


class LeakyReLU(_Module):
    type: Literal["LeakyReLU"]
    torch_class = nn.LeakyReLU
    negative_slope: StrictFloat = 0.01


class ELU(_Module):
    type: Literal["ELU"]
    torch_class = nn.ELU
    alpha: StrictFloat = 1.0


class GELU(_Module):
    type: Literal["GELU"]
    torch_class = nn.GELU
    approximate: Literal["none", "tanh"] = "none"


class SiLU(_Module):
    type: Literal["SiLU"]
    torch_class = nn.SiLU


class Mish(_Module):
    type: Literal["Mish"]
    torch_class = nn.Mish


class Tanh(_Module):
    type: Literal["Tanh"]
    torch_class = nn.Tanh


class Sigmoid(_Module):
    type: Literal["Sigmoid"]
    torch_class = nn.Sigmoid


class Softplus(_Module):
    type: Literal["Softplus"]
    torch_class = nn.Softplus
    beta: StrictFloat = 1.0
    threshold: StrictFloat = 20.0


class Hardtanh(_Module):
    type: Literal["Hardtanh"]
    torch_class = nn.Hardtanh
    min_val: StrictFloat = -1.0
    max_val: StrictFloat = 1.0


class PReLU(_Module):
    type: Literal["PReLU"]
    torch_class = nn.PReLU
    num_parameters: Pos = 1
    init: StrictFloat = 0.25


class Softmax(_Module):
    type: Literal["Softmax"]
    torch_class = nn.Softmax
    dim: Dim


class LogSoftmax(_Module):
    type: Literal["LogSoftmax"]
    torch_class = nn.LogSoftmax
    dim: Dim


class Flatten(_Module):
    type: Literal["Flatten"]
    torch_class = nn.Flatten
    start_dim: Dim = 1
    end_dim: Dim = -1


class Unflatten(_Module):
    type: Literal["Unflatten"]
    torch_class = nn.Unflatten
    dim: Dim
    unflattened_size: tuple[Pos, ...]


class Identity(_Module):
    type: Literal["Identity"]
    torch_class = nn.Identity


class _RecurrentBase(_TupleModule):
    input_size: Pos
    hidden_size: Pos
    num_layers: Pos = 1
    bias: StrictBool = True
    batch_first: StrictBool = False
    dropout: Prob = 0.0
    bidirectional: StrictBool = False


class RNN(_RecurrentBase):
    type: Literal["RNN"]
    torch_class = nn.RNN
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class LSTM(_RecurrentBase):
    type: Literal["LSTM"]
    torch_class = nn.LSTM


class GRU(_RecurrentBase):
    type: Literal["GRU"]
    torch_class = nn.GRU


class MultiheadAttention(_TupleModule):
    """Self-attention with one input (query = key = value), or cross-attention with three."""

    arity: ClassVar[tuple[int, int | None]] = (1, 3)
    type: Literal["MultiheadAttention"]
    torch_class = nn.MultiheadAttention
    embed_dim: Pos
    num_heads: Pos
    dropout: Prob = 0.0
    bias: StrictBool = True
    kdim: Pos | None = None
    vdim: Pos | None = None
    batch_first: StrictBool = False


class TransformerEncoderLayer(_Module):
    type: Literal["TransformerEncoderLayer"]
    torch_class = nn.TransformerEncoderLayer
    d_model: Pos
    nhead: Pos
    dim_feedforward: Pos = 2048
    dropout: Prob = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    layer_norm_eps: PosFloat = 1e-5
    batch_first: StrictBool = False
    norm_first: StrictBool = False
    bias: StrictBool = True


# --- functional ops ---------------------------------------------------------------------------------------------


class _Activation(_Op):
    pass


class relu(_Activation):
    type: Literal["relu"]
    takes_int = True

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.relu(xs[0])


class relu6(_Activation):
    type: Literal["relu6"]
    takes_int = True

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.relu6(xs[0])


class gelu(_Activation):
    type: Literal["gelu"]
    approximate: Literal["none", "tanh"] = "none"

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.gelu(xs[0], **kw)


class silu(_Activation):
    type: Literal["silu"]

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.silu(xs[0])


class tanh(_Activation):
    type: Literal["tanh"]
    takes_int = True

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return torch.tanh(xs[0])


class sigmoid(_Activation):
    type: Literal["sigmoid"]
    takes_int = True

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return torch.sigmoid(xs[0])


class leaky_relu(_Activation):
    type: Literal["leaky_relu"]
    negative_slope: StrictFloat = 0.01

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.leaky_relu(xs[0], **kw)


class elu(_Activation):
    type: Literal["elu"]
    alpha: StrictFloat = 1.0

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.elu(xs[0], **kw)


class softmax(_Op):
    type: Literal["softmax"]
    dim: Dim

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.softmax(xs[0], **kw)


class log_softmax(_Op):
    type: Literal["log_softmax"]
    dim: Dim

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.log_softmax(xs[0], **kw)


class max_pool1d(_Op):
    type: Literal["max_pool1d"]
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    dilation: Size = 1
    ceil_mode: StrictBool = False

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        out: torch.Tensor = F.max_pool1d(xs[0], **kw)  # typed as a union with return_indices
        return out


class max_pool2d(_Op):
    type: Literal["max_pool2d"]
    takes_int = True
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    dilation: Size = 1
    ceil_mode: StrictBool = False

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        out: torch.Tensor = F.max_pool2d(xs[0], **kw)
        return out


class avg_pool1d(_Op):
    type: Literal["avg_pool1d"]
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    ceil_mode: StrictBool = False
    count_include_pad: StrictBool = True

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.avg_pool1d(xs[0], **kw)


class avg_pool2d(_Op):
    type: Literal["avg_pool2d"]
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    ceil_mode: StrictBool = False
    count_include_pad: StrictBool = True

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.avg_pool2d(xs[0], **kw)


class adaptive_avg_pool2d(_Op):
    type: Literal["adaptive_avg_pool2d"]
    output_size: Size

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.adaptive_avg_pool2d(xs[0], **kw)


class flatten(_Op):
    """``torch.flatten``: like PyTorch, ``start_dim`` defaults to 0, which also flattens the batch."""

    type: Literal["flatten"]
    takes_int = True
    start_dim: Dim = 0
    end_dim: Dim = -1

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return torch.flatten(xs[0], **kw)


class reshape(_Op):
    """The whole tensor's new shape, batch dimension included (use -1 for it), as ``x.reshape(shape)``."""

    type: Literal["reshape"]
    takes_int = True
    shape: tuple[Annotated[StrictInt, Field(ge=-1, le=MAX_SIZE)], ...]

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return xs[0].reshape(kw["shape"])


class view(_Op):
    type: Literal["view"]
    takes_int = True
    shape: tuple[Annotated[StrictInt, Field(ge=-1, le=MAX_SIZE)], ...]

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return xs[0].view(kw["shape"])


class permute(_Op):
    type: Literal["permute"]
    takes_int = True
    dims: tuple[Dim, ...]

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return xs[0].permute(kw["dims"])


class transpose(_Op):
    type: Literal["transpose"]
    takes_int = True
    dim0: Dim
    dim1: Dim

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return torch.transpose(xs[0], **kw)


class unsqueeze(_Op):
    type: Literal["unsqueeze"]
    takes_int = True
    dim: Dim

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return torch.unsqueeze(xs[0], **kw)


class squeeze(_Op):
    type: Literal["squeeze"]
    takes_int = True
    dim: Dim

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return torch.squeeze(xs[0], **kw)


class mean(_Op):
    type: Literal["mean"]
    dim: Dim | tuple[Dim, ...]
    keepdim: StrictBool = False

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return torch.mean(xs[0], **kw)


class dropout(_Op):
    """``F.dropout(x, p, training=self.training)``: off in eval mode, like the module."""

    type: Literal["dropout"]
    p: Prob = 0.5

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return F.dropout(xs[0], training=net.training, **kw)


class add(_Op):
    arity: ClassVar[tuple[int, int | None]] = (2, None)
    type: Literal["add"]
    takes_int = True

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return functools.reduce(operator.add, xs)


class mul(_Op):
    arity: ClassVar[tuple[int, int | None]] = (2, None)
    type: Literal["mul"]
    takes_int = True

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return functools.reduce(operator.mul, xs)


class matmul(_Op):
    arity: ClassVar[tuple[int, int | None]] = (2, 2)
    type: Literal["matmul"]

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return torch.matmul(xs[0], xs[1])


class cat(_Op):
    arity: ClassVar[tuple[int, int | None]] = (2, None)
    type: Literal["cat"]
    takes_int = True
    dim: Dim = 0

    def apply(self, net: nn.Module, xs: Tensors, kw: dict[str, Any]) -> torch.Tensor:
        return torch.cat(list(xs), **kw)


LAYER_TYPES: tuple[type[_Layer], ...] = tuple(_CATALOGUE)
if TYPE_CHECKING:
    # Statically a layer is the base (its ``type`` a str); at run time the discriminated union.
    Layer = _Layer
else:
    Layer = Annotated[Union[LAYER_TYPES], Field(discriminator="type")]  # noqa: UP007 - a Union of a tuple
LayerBase = _Layer
