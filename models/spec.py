"""Request-side specs: networks, losses and optimizers, each a discriminated union on ``type``.

Pydantic checks each spec's own fields; what needs PyTorch (shapes, parameter counts) is checked by
``models.build.validate_network`` on the meta device.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from models.layers import Layer, Pos, Prob

NonNegFloat = Annotated[StrictFloat, Field(ge=0.0)]
PosFloat = Annotated[StrictFloat, Field(gt=0.0)]
Beta = Annotated[StrictFloat, Field(ge=0.0, lt=1.0)]
Reduction = Literal["mean", "sum", "none"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


LENET_EXAMPLE = {
    "name": "Net",
    "input_shape": [1, 32, 32],
    "layers": [
        {"name": "conv1", "type": "Conv2d", "in_channels": 1, "out_channels": 6, "kernel_size": 5},
        {"type": "relu"},
        {"type": "max_pool2d", "kernel_size": [2, 2]},
        {"name": "conv2", "type": "Conv2d", "in_channels": 6, "out_channels": 16, "kernel_size": 5},
        {"type": "relu"},
        {"type": "max_pool2d", "kernel_size": 2},
        {"type": "flatten", "start_dim": 1},
        {"name": "fc1", "type": "Linear", "in_features": 400, "out_features": 120},
        {"type": "relu"},
        {"name": "fc2", "type": "Linear", "in_features": 120, "out_features": 84},
        {"type": "relu"},
        {"name": "fc3", "type": "Linear", "in_features": 84, "out_features": 10},
    ],
}


class NetworkSpec(_Spec):
    """An ordered list of layers; ``inputs`` on a layer turns the list into a DAG."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [LENET_EXAMPLE]})

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")] = Field(
        default="Net", description="Class name shown in the repr, as in `class Net(nn.Module)`."
    )
    input_shape: Annotated[list[Pos], Field(min_length=1, max_length=5)] = Field(
        description="Shape of one sample; the batch dimension is added by the caller."
    )
    input_dtype: Literal["float32", "float64", "int64"] = Field(
        default="float32", description="int64 for networks that start with an Embedding."
    )
    layers: Annotated[list[Layer], Field(min_length=1)]


# --- losses -----------------------------------------------------------------------------------------------------


class _Loss(_Spec):
    reduction: Reduction = "mean"


class MSELoss(_Loss):
    type: Literal["MSELoss"]


class L1Loss(_Loss):
    type: Literal["L1Loss"]


class SmoothL1Loss(_Loss):
    type: Literal["SmoothL1Loss"]
    beta: NonNegFloat = 1.0


class HuberLoss(_Loss):
    type: Literal["HuberLoss"]
    delta: PosFloat = 1.0


class CrossEntropyLoss(_Loss):
    type: Literal["CrossEntropyLoss"]
    weight: list[StrictFloat] | None = None
    ignore_index: Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)] = -100
    label_smoothing: Prob = 0.0


class NLLLoss(_Loss):
    type: Literal["NLLLoss"]
    weight: list[StrictFloat] | None = None
    ignore_index: Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)] = -100


class BCELoss(_Loss):
    type: Literal["BCELoss"]
    weight: list[StrictFloat] | None = None


class BCEWithLogitsLoss(_Loss):
    type: Literal["BCEWithLogitsLoss"]
    weight: list[StrictFloat] | None = None
    pos_weight: list[StrictFloat] | None = None


class KLDivLoss(_Loss):
    type: Literal["KLDivLoss"]
    reduction: Literal["mean", "sum", "none", "batchmean"] = "mean"
    log_target: StrictBool = False


class SoftMarginLoss(_Loss):
    type: Literal["SoftMarginLoss"]


class PoissonNLLLoss(_Loss):
    type: Literal["PoissonNLLLoss"]
    log_input: StrictBool = True
    full: StrictBool = False
    eps: PosFloat = 1e-8


LOSS_TYPES = (MSELoss, L1Loss, SmoothL1Loss, HuberLoss, CrossEntropyLoss, NLLLoss, BCELoss, BCEWithLogitsLoss,
              KLDivLoss, SoftMarginLoss, PoissonNLLLoss)  # fmt: skip
LossSpec = Annotated[Union[LOSS_TYPES], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007 - Union of a tuple
# Losses whose target is a class index per sample (int64), not a tensor shaped like the output.
CLASS_INDEX_LOSSES = frozenset({"CrossEntropyLoss", "NLLLoss"})


# --- optimizers -------------------------------------------------------------------------------------------------


class SGD(_Spec):
    type: Literal["SGD"]
    lr: PosFloat = 1e-3
    momentum: NonNegFloat = 0.0
    dampening: NonNegFloat = 0.0
    weight_decay: NonNegFloat = 0.0
    nesterov: StrictBool = False
    maximize: StrictBool = False


class _AdamBase(_Spec):
    lr: PosFloat = 1e-3
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PosFloat = 1e-8
    maximize: StrictBool = False


class Adam(_AdamBase):
    type: Literal["Adam"]
    weight_decay: NonNegFloat = 0.0
    amsgrad: StrictBool = False


class AdamW(_AdamBase):
    type: Literal["AdamW"]
    weight_decay: NonNegFloat = 1e-2
    amsgrad: StrictBool = False


class Adamax(_AdamBase):
    type: Literal["Adamax"]
    lr: PosFloat = 2e-3
    weight_decay: NonNegFloat = 0.0


class NAdam(_AdamBase):
    type: Literal["NAdam"]
    lr: PosFloat = 2e-3
    weight_decay: NonNegFloat = 0.0


class RAdam(_AdamBase):
    type: Literal["RAdam"]
    weight_decay: NonNegFloat = 0.0


class RMSprop(_Spec):
    type: Literal["RMSprop"]
    lr: PosFloat = 1e-2
    alpha: Beta = 0.99
    eps: PosFloat = 1e-8
    weight_decay: NonNegFloat = 0.0
    momentum: NonNegFloat = 0.0
    centered: StrictBool = False
    maximize: StrictBool = False


class Adagrad(_Spec):
    type: Literal["Adagrad"]
    lr: PosFloat = 1e-2
    lr_decay: NonNegFloat = 0.0
    weight_decay: NonNegFloat = 0.0
    initial_accumulator_value: NonNegFloat = 0.0
    eps: PosFloat = 1e-10
    maximize: StrictBool = False


class Adadelta(_Spec):
    type: Literal["Adadelta"]
    lr: PosFloat = 1.0
    rho: Beta = 0.9
    eps: PosFloat = 1e-6
    weight_decay: NonNegFloat = 0.0
    maximize: StrictBool = False


OPTIMIZER_TYPES = (SGD, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, Adadelta)
OptimizerSpec = Annotated[Union[OPTIMIZER_TYPES], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007 - Union of a tuple


def torch_kwargs(spec: BaseModel) -> dict:
    """The constructor keywords the user wrote, minus our own fields, with lists made tuples.

    Only fields the user set are passed, so the module's repr equals the hand-written call's.
    """
    own = {"type", "name", "inputs", "select"}
    return {k: _tuplify(v) for k, v in spec.model_dump(exclude_unset=True).items() if k not in own}


def _tuplify(value: object) -> object:
    return tuple(_tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value
