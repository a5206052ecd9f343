"""Annotated field types shared by every spec: one definition each, so a bound changes in one place."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

# A layer's name: a Python name (``self.conv1 = ...``), or a small number, as ``nn.Sequential`` names its children.
LAYER_NAME = r"^([A-Za-z_][A-Za-z0-9_]{0,63}|[0-9]{1,4})$"
LayerName = Annotated[str, Field(pattern=LAYER_NAME)]
# Bounded so that an absurd size is a clean 422 on its field, not an overflow deep inside PyTorch
# (whose message then carries a C++ stack trace); the limits in settings refuse far smaller ones.
MAX_SIZE = 2**31 - 1
Pos = Annotated[StrictInt, Field(ge=1, le=MAX_SIZE)]
NonNeg = Annotated[StrictInt, Field(ge=0, le=MAX_SIZE)]
Dim = Annotated[StrictInt, Field(ge=-64, le=64)]  # PyTorch tensors have at most 64 dimensions
Size = Pos | tuple[Pos, ...]
Pad = NonNeg | tuple[NonNeg, ...]
Prob = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]
PosFloat = Annotated[StrictFloat, Field(gt=0.0)]
NonNegFloat = Annotated[StrictFloat, Field(ge=0.0)]
Beta = Annotated[StrictFloat, Field(ge=0.0, lt=1.0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Reduction = Literal["mean", "sum", "none"]
# A seed for torch.manual_seed of a job or session.
Seed = Annotated[StrictInt, Field(ge=0, lt=2**63)]
# Where a session or job runs; "auto" takes a GPU when a GPU worker is up.
Device = Literal["auto", "cpu", "cuda"]


class Spec(BaseModel):
    """Base of every request-side spec: unknown keys are refused, specs are hashable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def torch_kwargs(spec: BaseModel) -> dict[str, Any]:
    """The constructor keywords the user wrote, minus our own fields, with lists made tuples.

    Only fields the user set are passed, so the module's repr equals the hand-written call's.
    """
    own = {"type", "name", "inputs", "select", "interval"}
    return {k: _tuplify(v) for k, v in spec.model_dump(exclude_unset=True).items() if k not in own}


def _tuplify(value: object) -> object:
    return tuple(_tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value
