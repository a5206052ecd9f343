"""The closed catalogue of ``torch.optim`` optimizers, discriminated on ``type``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Union

from pydantic import Field, StrictBool, StrictFloat
from torch import optim

from models.spec.types import Beta, Prob, Spec

# Hyper-parameters are bounded far above any useful value but well inside float range: lr=1e308 passed
# validation and sent every weight to inf at the first step, a job that could only fail. A 422 says so
# at submit time instead.
MAX_HYPER = 1e4
LearningRate = Annotated[StrictFloat, Field(gt=0.0, le=MAX_HYPER)]
Coefficient = Annotated[StrictFloat, Field(ge=0.0, le=MAX_HYPER)]  # weight decay, momentum, lr decay
Eps = Annotated[StrictFloat, Field(gt=0.0, le=1.0)]


class _Optimizer(Spec):
    torch_class: ClassVar[type[optim.Optimizer]]
    if TYPE_CHECKING:  # each optimizer declares its own, with its own default
        lr: float


class SGD(_Optimizer):
    torch_class = optim.SGD
    type: Literal["SGD"]
    lr: LearningRate = 1e-3
    momentum: Coefficient = 0.0
    dampening: Prob = 0.0
    weight_decay: Coefficient = 0.0
    nesterov: StrictBool = False
    maximize: StrictBool = False


class _AdamBase(_Optimizer):
    lr: LearningRate = 1e-3
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: Eps = 1e-8
    maximize: StrictBool = False


class Adam(_AdamBase):
    torch_class = optim.Adam
    type: Literal["Adam"]
    weight_decay: Coefficient = 0.0
    amsgrad: StrictBool = False


class AdamW(_AdamBase):
    torch_class = optim.AdamW
    type: Literal["AdamW"]
    weight_decay: Coefficient = 1e-2
    amsgrad: StrictBool = False


class Adamax(_AdamBase):
    torch_class = optim.Adamax
    type: Literal["Adamax"]
    lr: LearningRate = 2e-3
    weight_decay: Coefficient = 0.0


class NAdam(_AdamBase):
    torch_class = optim.NAdam
    type: Literal["NAdam"]
    lr: LearningRate = 2e-3
    weight_decay: Coefficient = 0.0


class RAdam(_AdamBase):
    torch_class = optim.RAdam
    type: Literal["RAdam"]
    weight_decay: Coefficient = 0.0


class RMSprop(_Optimizer):
    torch_class = optim.RMSprop
    type: Literal["RMSprop"]
    lr: LearningRate = 1e-2
    alpha: Beta = 0.99
    eps: Eps = 1e-8
    weight_decay: Coefficient = 0.0
    momentum: Coefficient = 0.0
    centered: StrictBool = False
    maximize: StrictBool = False


class Adagrad(_Optimizer):
    torch_class = optim.Adagrad
    type: Literal["Adagrad"]
    lr: LearningRate = 1e-2
    lr_decay: Coefficient = 0.0
    weight_decay: Coefficient = 0.0
    initial_accumulator_value: Coefficient = 0.0
    eps: Eps = 1e-10
    maximize: StrictBool = False


class Adadelta(_Optimizer):
    torch_class = optim.Adadelta
    type: Literal["Adadelta"]
    lr: LearningRate = 1.0
    rho: Beta = 0.9
    eps: Eps = 1e-6
    weight_decay: Coefficient = 0.0
    maximize: StrictBool = False


OPTIMIZER_TYPES = (SGD, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, Adadelta)
if TYPE_CHECKING:
    OptimizerSpec = _Optimizer  # statically the base class; at run time the discriminated union
else:
    OptimizerSpec = Annotated[Union[OPTIMIZER_TYPES], Field(discriminator="type")]  # noqa: UP007 - a Union of a tuple
