"""The closed catalogue of ``torch.optim`` optimizers, discriminated on ``type``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Union

from pydantic import Field, StrictBool
from torch import optim

from models.spec.types import Beta, NonNegFloat, PosFloat, Spec


class _Optimizer(Spec):
    torch_class: ClassVar[type[optim.Optimizer]]


class SGD(_Optimizer):
    torch_class = optim.SGD
    type: Literal["SGD"]
    lr: PosFloat = 1e-3
    momentum: NonNegFloat = 0.0
    dampening: NonNegFloat = 0.0
    weight_decay: NonNegFloat = 0.0
    nesterov: StrictBool = False
    maximize: StrictBool = False


class _AdamBase(_Optimizer):
    lr: PosFloat = 1e-3
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: PosFloat = 1e-8
    maximize: StrictBool = False


class Adam(_AdamBase):
    torch_class = optim.Adam
    type: Literal["Adam"]
    weight_decay: NonNegFloat = 0.0
    amsgrad: StrictBool = False


class AdamW(_AdamBase):
    torch_class = optim.AdamW
    type: Literal["AdamW"]
    weight_decay: NonNegFloat = 1e-2
    amsgrad: StrictBool = False


class Adamax(_AdamBase):
    torch_class = optim.Adamax
    type: Literal["Adamax"]
    lr: PosFloat = 2e-3
    weight_decay: NonNegFloat = 0.0


class NAdam(_AdamBase):
    torch_class = optim.NAdam
    type: Literal["NAdam"]
    lr: PosFloat = 2e-3
    weight_decay: NonNegFloat = 0.0


class RAdam(_AdamBase):
    torch_class = optim.RAdam
    type: Literal["RAdam"]
    weight_decay: NonNegFloat = 0.0


class RMSprop(_Optimizer):
    torch_class = optim.RMSprop
    type: Literal["RMSprop"]
    lr: PosFloat = 1e-2
    alpha: Beta = 0.99
    eps: PosFloat = 1e-8
    weight_decay: NonNegFloat = 0.0
    momentum: NonNegFloat = 0.0
    centered: StrictBool = False
    maximize: StrictBool = False


class Adagrad(_Optimizer):
    torch_class = optim.Adagrad
    type: Literal["Adagrad"]
    lr: PosFloat = 1e-2
    lr_decay: NonNegFloat = 0.0
    weight_decay: NonNegFloat = 0.0
    initial_accumulator_value: NonNegFloat = 0.0
    eps: PosFloat = 1e-10
    maximize: StrictBool = False


class Adadelta(_Optimizer):
    torch_class = optim.Adadelta
    type: Literal["Adadelta"]
    lr: PosFloat = 1.0
    rho: Beta = 0.9
    eps: PosFloat = 1e-6
    weight_decay: NonNegFloat = 0.0
    maximize: StrictBool = False


OPTIMIZER_TYPES = (SGD, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, Adadelta)
if TYPE_CHECKING:
    OptimizerSpec = Spec  # statically the base class; at run time the discriminated union
else:
    OptimizerSpec = Annotated[Union[OPTIMIZER_TYPES], Field(discriminator="type")]  # noqa: UP007 - a Union of a tuple
