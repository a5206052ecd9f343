"""Sweep responses: the sweep with its trials, a page of sweeps."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from gradserve.protocol.states import SweepStatus as SweepStatus
from gradserve.protocol.states import TrialState


class SweepSubmitted(BaseModel):
    id: str
    status: SweepStatus


class TrialPublic(BaseModel):
    number: int
    job_id: str | None = Field(description="The trial's job (GET /v1/jobs/{id}); null if it could not start.")
    params: dict[str, Any]
    state: TrialState
    value: float | None = Field(description="The objective at the trial's end, for a complete trial.")
    intermediate: dict[str, float] = Field(default_factory=dict, description="Epoch -> held-out metric reported.")
    error: str | None = None


class SweepPublic(BaseModel):
    id: str
    name: str | None
    status: SweepStatus
    created_at: float
    finished_at: float | None
    objective: dict[str, str]
    max_trials: int
    parallelism: int
    seed: int = Field(description="The sampler's seed (drawn when the request gave none): send it to replay.")
    trials: list[TrialPublic]
    best: TrialPublic | None = Field(description="The best complete trial so far.")
    importances: dict[str, float] | None = Field(
        description="Optuna's parameter importances (fANOVA), once two trials completed."
    )


class SweepSummary(BaseModel):
    id: str
    name: str | None
    status: SweepStatus
    created_at: float
    finished_at: float | None
    objective: dict[str, str]
    max_trials: int
    trials: int = Field(description="Trials started so far.")
    best_value: float | None = Field(description="The objective of the best complete trial so far.")


class SweepsPublic(BaseModel):
    data: list[SweepSummary]
    count: int
    total: int
    next_offset: int | None
