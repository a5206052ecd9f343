"""The sweep request: a job template, a search space of dotted paths into it, an objective and a pruner."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from models.spec.job import JobCreate

# A path into the template: ``optimizer.lr``, ``batch_size``, ``network.layers.2.out_features``.
ParamPath = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+){0,7}$", max_length=200)]


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatParam(_Req):
    """``trial.suggest_float(low, high, log=log, step=step)``."""

    type: Literal["float"]
    low: StrictFloat | StrictInt
    high: StrictFloat | StrictInt
    log: StrictBool = False
    step: Annotated[StrictFloat, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        if self.log and self.low <= 0:
            raise ValueError("a log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        return self


class IntParam(_Req):
    """``trial.suggest_int(low, high, log=log, step=step)``."""

    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    log: StrictBool = False
    step: Annotated[StrictInt, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("a log scale needs low > 0 and step 1")
        return self


Choice = StrictStr | StrictInt | StrictFloat | StrictBool | None


class CategoricalParam(_Req):
    """``trial.suggest_categorical(choices)``."""

    type: Literal["categorical"]
    choices: Annotated[list[Choice], Field(min_length=1, max_length=64)]


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class Objective(_Req):
    """The held-out metric to optimize; the direction follows from it (accuracy up, loss down)."""

    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    direction: Literal["maximize", "minimize"] = Field(
        default="maximize", description="Default: maximize val_accuracy, minimize val_loss."
    )

    @model_validator(mode="before")
    @classmethod
    def _direction_from_metric(cls, data: Any) -> Any:
        # A sweep on val_loss that left the direction out once maximized it, and called its worst trial best.
        if isinstance(data, dict) and "direction" not in data:
            return {**data, "direction": "minimize" if data.get("metric") == "val_loss" else "maximize"}
        return data

    @model_validator(mode="after")
    def _sensible(self) -> Objective:
        wanted = "minimize" if self.metric == "val_loss" else "maximize"
        if self.direction != wanted:
            raise ValueError(f"{self.direction} {self.metric} would call the worst trial the best: {wanted} it")
        return self


class PrunerSpec(_Req):
    """Optuna's MedianPruner or SuccessiveHalvingPruner, fed each epoch's held-out metric."""

    type: Literal["median", "successive_halving", "none"] = "median"
    n_startup_trials: Annotated[StrictInt, Field(ge=0, le=1000)] = Field(
        default=2, description="median: trials that must finish before any is pruned."
    )
    n_warmup_steps: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = Field(
        default=1, description="median: epochs a trial runs before it can be pruned."
    )
    min_resource: Annotated[StrictInt, Field(ge=1, le=1_000_000)] | None = Field(
        default=None, description="successive_halving: epochs before the first rung (default: Optuna's estimate)."
    )
    reduction_factor: Annotated[StrictInt, Field(ge=2, le=100)] = 4


class SweepCreate(_Req):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    template: JobCreate
    space: Annotated[dict[ParamPath, ParamSpec], Field(min_length=1, max_length=32)]
    objective: Objective = Objective()
    max_trials: Annotated[StrictInt, Field(ge=1, le=1000)] = 10
    parallelism: Annotated[StrictInt, Field(ge=1, le=64)] = 1
    pruner: PrunerSpec = PrunerSpec()
    # A fixed default made every sweep of one body draw the same trials. Drawn here, it is part of the
    # stored request the controller reads back, so a sweep keeps its seed and GET can tell it.
    seed: Annotated[StrictInt, Field(ge=0, lt=2**31)] = Field(
        default_factory=lambda: secrets.randbelow(2**31),
        description="The sampler's seed; drawn at random when left out. GET gives it: the same body with it "
        "draws the same trials.",
    )

    @model_validator(mode="after")
    def _room_for_the_sweep_tag(self) -> SweepCreate:
        if len(self.template.tags) >= 32:
            raise ValueError("template.tags: at most 31 tags (each trial also gets 'sweep=<id>')")
        return self
