"""The closed catalogue of ``torch.optim.lr_scheduler`` schedulers a job may use, discriminated on ``type``.

``interval`` says when the scheduler steps: after every optimizer step, or after the last step of each
epoch. Each defaults to how PyTorch's documentation steps it (per epoch; OneCycleLR per batch).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, StrictBool
from torch.optim import lr_scheduler

from models.spec.types import NonNeg, NonNegFloat, Pos, PosFloat, Prob, Spec

Interval = Literal["epoch", "step"]
Factor = Annotated[float, Field(gt=0.0, le=1.0)]


class _Scheduler(Spec):
    torch_class: ClassVar[type[lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau]]
    interval: Interval = Field(default="epoch", description="Step after every optimizer step, or every epoch.")


class StepLR(_Scheduler):
    torch_class = lr_scheduler.StepLR
    type: Literal["StepLR"]
    step_size: Pos
    gamma: PosFloat = 0.1


class MultiStepLR(_Scheduler):
    torch_class = lr_scheduler.MultiStepLR
    type: Literal["MultiStepLR"]
    milestones: Annotated[list[Pos], Field(min_length=1, max_length=1000)]
    gamma: PosFloat = 0.1


class ExponentialLR(_Scheduler):
    torch_class = lr_scheduler.ExponentialLR
    type: Literal["ExponentialLR"]
    gamma: PosFloat


class CosineAnnealingLR(_Scheduler):
    torch_class = lr_scheduler.CosineAnnealingLR
    type: Literal["CosineAnnealingLR"]
    T_max: Pos
    eta_min: NonNegFloat = 0.0


class OneCycleLR(_Scheduler):
    torch_class = lr_scheduler.OneCycleLR
    type: Literal["OneCycleLR"]
    interval: Literal["step"] = "step"
    max_lr: PosFloat
    total_steps: Pos | None = Field(default=None, description="Default: the job's total steps.")
    pct_start: Prob = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    cycle_momentum: StrictBool = True
    base_momentum: NonNegFloat = 0.85
    max_momentum: NonNegFloat = 0.95
    div_factor: PosFloat = 25.0
    final_div_factor: PosFloat = 1e4
    three_phase: StrictBool = False


class LinearLR(_Scheduler):
    torch_class = lr_scheduler.LinearLR
    type: Literal["LinearLR"]
    start_factor: Factor = 1.0 / 3
    end_factor: Factor = 1.0
    total_iters: Pos = 5


class ReduceLROnPlateau(_Scheduler):
    """Steps on the held-out loss at the end of each epoch, so the dataset needs a held-out split."""

    torch_class = lr_scheduler.ReduceLROnPlateau
    type: Literal["ReduceLROnPlateau"]
    interval: Literal["epoch"] = "epoch"
    mode: Literal["min", "max"] = "min"
    factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    patience: NonNeg = 10
    threshold: NonNegFloat = 1e-4
    threshold_mode: Literal["rel", "abs"] = "rel"
    cooldown: NonNeg = 0
    min_lr: NonNegFloat = 0.0
    eps: NonNegFloat = 1e-8


SCHEDULER_TYPES = (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, OneCycleLR, LinearLR, ReduceLROnPlateau)
SchedulerSpec = Annotated[Union[SCHEDULER_TYPES], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007 - Union of a tuple
