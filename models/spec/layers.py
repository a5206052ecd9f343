"""The closed catalogue of layers a network spec may use, one pydantic model per layer type.

``CamelCase`` types are ``torch.nn`` modules (named children, own parameters, shown in the repr);
``lower_snake`` types are ``torch.nn.functional``/``torch`` ops (no parameters, absent from the repr).
Field names and defaults are PyTorch's own, so a spec reads like the constructor call it stands for.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from models.spec.types import MAX_SIZE, Dim, Identifier, NonNeg, Pad, Pos, PosFloat, Prob, Size


class _Layer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # "module": a torch.nn child; "op": a functional op. Read by the builder, never sent on the wire.
    kind: ClassVar[str] = "op"
    # How many inputs the layer takes: (min, max); None is unbounded.
    arity: ClassVar[tuple[int, int | None]] = (1, 1)

    name: Identifier | None = Field(default=None, description="Labels the output; for a module, its attribute name.")
    inputs: tuple[Identifier, ...] | None = Field(
        default=None, description='Earlier layer names (or "input"); default: the previous layer\'s output.'
    )


class _Module(_Layer):
    kind: ClassVar[str] = "module"


class _TupleModule(_Module):
    select: NonNeg = Field(default=0, description="Which element of the module's tuple output to pass on.")


# --- torch.nn modules -------------------------------------------------------------------------------------------


class Linear(_Module):
    type: Literal["Linear"]
    in_features: Pos
    out_features: Pos
    bias: StrictBool = True


class _ConvBase(_Module):
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


class Conv2d(_ConvBase):
    type: Literal["Conv2d"]


class Conv3d(_ConvBase):
    type: Literal["Conv3d"]


class _ConvTransposeBase(_Module):
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


class ConvTranspose2d(_ConvTransposeBase):
    type: Literal["ConvTranspose2d"]


class _MaxPoolBase(_Module):
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    dilation: Size = 1
    ceil_mode: StrictBool = False


class MaxPool1d(_MaxPoolBase):
    type: Literal["MaxPool1d"]


class MaxPool2d(_MaxPoolBase):
    type: Literal["MaxPool2d"]


class _AvgPoolBase(_Module):
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    ceil_mode: StrictBool = False
    count_include_pad: StrictBool = True


class AvgPool1d(_AvgPoolBase):
    type: Literal["AvgPool1d"]


class AvgPool2d(_AvgPoolBase):
    type: Literal["AvgPool2d"]


class AdaptiveAvgPool1d(_Module):
    type: Literal["AdaptiveAvgPool1d"]
    output_size: Size


class AdaptiveAvgPool2d(_Module):
    type: Literal["AdaptiveAvgPool2d"]
    output_size: Size


class AdaptiveMaxPool2d(_Module):
    type: Literal["AdaptiveMaxPool2d"]
    output_size: Size


class _BatchNormBase(_Module):
    num_features: Pos
    eps: PosFloat = 1e-5
    momentum: Prob | None = 0.1
    affine: StrictBool = True
    track_running_stats: StrictBool = True


class BatchNorm1d(_BatchNormBase):
    type: Literal["BatchNorm1d"]


class BatchNorm2d(_BatchNormBase):
    type: Literal["BatchNorm2d"]


class BatchNorm3d(_BatchNormBase):
    type: Literal["BatchNorm3d"]


class LayerNorm(_Module):
    type: Literal["LayerNorm"]
    normalized_shape: Size
    eps: PosFloat = 1e-5
    elementwise_affine: StrictBool = True
    bias: StrictBool = True


class GroupNorm(_Module):
    type: Literal["GroupNorm"]
    num_groups: Pos
    num_channels: Pos
    eps: PosFloat = 1e-5
    affine: StrictBool = True


class Dropout(_Module):
    type: Literal["Dropout"]
    p: Prob = 0.5


class Dropout2d(_Module):
    type: Literal["Dropout2d"]
    p: Prob = 0.5


class Embedding(_Module):
    type: Literal["Embedding"]
    num_embeddings: Pos
    embedding_dim: Pos
    padding_idx: Annotated[StrictInt, Field(ge=-MAX_SIZE, le=MAX_SIZE)] | None = None


class ReLU(_Module):
    type: Literal["ReLU"]


class ReLU6(_Module):
    type: Literal["ReLU6"]


class LeakyReLU(_Module):
    type: Literal["LeakyReLU"]
    negative_slope: StrictFloat = 0.01


class ELU(_Module):
    type: Literal["ELU"]
    alpha: StrictFloat = 1.0


class GELU(_Module):
    type: Literal["GELU"]
    approximate: Literal["none", "tanh"] = "none"


class SiLU(_Module):
    type: Literal["SiLU"]


class Mish(_Module):
    type: Literal["Mish"]


class Tanh(_Module):
    type: Literal["Tanh"]


class Sigmoid(_Module):
    type: Literal["Sigmoid"]


class Softplus(_Module):
    type: Literal["Softplus"]
    beta: StrictFloat = 1.0
    threshold: StrictFloat = 20.0


class Hardtanh(_Module):
    type: Literal["Hardtanh"]
    min_val: StrictFloat = -1.0
    max_val: StrictFloat = 1.0


class PReLU(_Module):
    type: Literal["PReLU"]
    num_parameters: Pos = 1
    init: StrictFloat = 0.25


class Softmax(_Module):
    type: Literal["Softmax"]
    dim: Dim


class LogSoftmax(_Module):
    type: Literal["LogSoftmax"]
    dim: Dim


class Flatten(_Module):
    type: Literal["Flatten"]
    start_dim: Dim = 1
    end_dim: Dim = -1


class Unflatten(_Module):
    type: Literal["Unflatten"]
    dim: Dim
    unflattened_size: tuple[Pos, ...]


class Identity(_Module):
    type: Literal["Identity"]


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
    nonlinearity: Literal["tanh", "relu"] = "tanh"


class LSTM(_RecurrentBase):
    type: Literal["LSTM"]


class GRU(_RecurrentBase):
    type: Literal["GRU"]


class MultiheadAttention(_TupleModule):
    """Self-attention with one input (query = key = value), or cross-attention with three."""

    arity: ClassVar[tuple[int, int | None]] = (1, 3)
    type: Literal["MultiheadAttention"]
    embed_dim: Pos
    num_heads: Pos
    dropout: Prob = 0.0
    bias: StrictBool = True
    kdim: Pos | None = None
    vdim: Pos | None = None
    batch_first: StrictBool = False


class TransformerEncoderLayer(_Module):
    type: Literal["TransformerEncoderLayer"]
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


class _Activation(_Layer):
    pass


class relu(_Activation):
    type: Literal["relu"]


class relu6(_Activation):
    type: Literal["relu6"]


class gelu(_Activation):
    type: Literal["gelu"]
    approximate: Literal["none", "tanh"] = "none"


class silu(_Activation):
    type: Literal["silu"]


class tanh(_Activation):
    type: Literal["tanh"]


class sigmoid(_Activation):
    type: Literal["sigmoid"]


class leaky_relu(_Activation):
    type: Literal["leaky_relu"]
    negative_slope: StrictFloat = 0.01


class elu(_Activation):
    type: Literal["elu"]
    alpha: StrictFloat = 1.0


class softmax(_Layer):
    type: Literal["softmax"]
    dim: Dim


class log_softmax(_Layer):
    type: Literal["log_softmax"]
    dim: Dim


class max_pool1d(_Layer):
    type: Literal["max_pool1d"]
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    dilation: Size = 1
    ceil_mode: StrictBool = False


class max_pool2d(_Layer):
    type: Literal["max_pool2d"]
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    dilation: Size = 1
    ceil_mode: StrictBool = False


class avg_pool1d(_Layer):
    type: Literal["avg_pool1d"]
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    ceil_mode: StrictBool = False
    count_include_pad: StrictBool = True


class avg_pool2d(_Layer):
    type: Literal["avg_pool2d"]
    kernel_size: Size
    stride: Size | None = None
    padding: Pad = 0
    ceil_mode: StrictBool = False
    count_include_pad: StrictBool = True


class adaptive_avg_pool2d(_Layer):
    type: Literal["adaptive_avg_pool2d"]
    output_size: Size


class flatten(_Layer):
    """``torch.flatten``: like PyTorch, ``start_dim`` defaults to 0, which also flattens the batch."""

    type: Literal["flatten"]
    start_dim: Dim = 0
    end_dim: Dim = -1


class reshape(_Layer):
    """The whole tensor's new shape, batch dimension included (use -1 for it), as ``x.reshape(shape)``."""

    type: Literal["reshape"]
    shape: tuple[Annotated[StrictInt, Field(ge=-1, le=MAX_SIZE)], ...]


class view(_Layer):
    type: Literal["view"]
    shape: tuple[Annotated[StrictInt, Field(ge=-1, le=MAX_SIZE)], ...]


class permute(_Layer):
    type: Literal["permute"]
    dims: tuple[Dim, ...]


class transpose(_Layer):
    type: Literal["transpose"]
    dim0: Dim
    dim1: Dim


class unsqueeze(_Layer):
    type: Literal["unsqueeze"]
    dim: Dim


class squeeze(_Layer):
    type: Literal["squeeze"]
    dim: Dim


class mean(_Layer):
    type: Literal["mean"]
    dim: Dim | tuple[Dim, ...]
    keepdim: StrictBool = False


class dropout(_Layer):
    """``F.dropout(x, p, training=self.training)``: off in eval mode, like the module."""

    type: Literal["dropout"]
    p: Prob = 0.5


class add(_Layer):
    arity: ClassVar[tuple[int, int | None]] = (2, None)
    type: Literal["add"]


class mul(_Layer):
    arity: ClassVar[tuple[int, int | None]] = (2, None)
    type: Literal["mul"]


class matmul(_Layer):
    arity: ClassVar[tuple[int, int | None]] = (2, 2)
    type: Literal["matmul"]


class cat(_Layer):
    arity: ClassVar[tuple[int, int | None]] = (2, None)
    type: Literal["cat"]
    dim: Dim = 0


LAYER_TYPES: tuple[type[_Layer], ...] = (
    Linear,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    MaxPool1d,
    MaxPool2d,
    AvgPool1d,
    AvgPool2d,
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool2d,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    LayerNorm,
    GroupNorm,
    Dropout,
    Dropout2d,
    Embedding,
    ReLU,
    ReLU6,
    LeakyReLU,
    ELU,
    GELU,
    SiLU,
    Mish,
    Tanh,
    Sigmoid,
    Softplus,
    Hardtanh,
    PReLU,
    Softmax,
    LogSoftmax,
    Flatten,
    Unflatten,
    Identity,
    RNN,
    LSTM,
    GRU,
    MultiheadAttention,
    TransformerEncoderLayer,
    relu,
    relu6,
    gelu,
    silu,
    tanh,
    sigmoid,
    leaky_relu,
    elu,
    softmax,
    log_softmax,
    max_pool1d,
    max_pool2d,
    avg_pool1d,
    avg_pool2d,
    adaptive_avg_pool2d,
    flatten,
    reshape,
    view,
    permute,
    transpose,
    unsqueeze,
    squeeze,
    mean,
    dropout,
    add,
    mul,
    matmul,
    cat,
)

Layer = Annotated[Union[LAYER_TYPES], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007 - Union of a tuple
LayerBase = _Layer
