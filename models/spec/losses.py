"""The closed catalogue of ``torch.nn`` losses a session or job may use, discriminated on ``type``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from models.spec.types import NonNegFloat, PosFloat, Prob, Reduction, Spec


class _Loss(Spec):
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
    reduction: Literal["mean", "sum", "none", "batchmean"] = "mean"  # type: ignore[assignment]  # widens _Loss's
    log_target: StrictBool = False


class SoftMarginLoss(_Loss):
    type: Literal["SoftMarginLoss"]


class PoissonNLLLoss(_Loss):
    type: Literal["PoissonNLLLoss"]
    log_input: StrictBool = True
    full: StrictBool = False
    eps: PosFloat = 1e-8


LOSS_TYPES = (
    MSELoss,
    L1Loss,
    SmoothL1Loss,
    HuberLoss,
    CrossEntropyLoss,
    NLLLoss,
    BCELoss,
    BCEWithLogitsLoss,
    KLDivLoss,
    SoftMarginLoss,
    PoissonNLLLoss,
)
if TYPE_CHECKING:
    LossSpec = _Loss  # statically the base class; at run time the discriminated union
else:
    LossSpec = Annotated[Union[LOSS_TYPES], Field(discriminator="type")]  # noqa: UP007 - a Union of a tuple
# Losses whose target is a class index per sample (int64), not a tensor shaped like the output.
CLASS_INDEX_LOSSES = frozenset({"CrossEntropyLoss", "NLLLoss"})
