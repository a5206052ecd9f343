"""The protocol's public form (``GET /protocol``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class StatesPublic(BaseModel):
    states: list[str] = Field(description="Every state, in the order a run goes through them.")
    terminal: list[str] = Field(description="The states it never leaves.")
    stopped: list[str] | None = Field(
        default=None, description="Jobs only: the states where nothing runs until someone acts (terminal and paused)."
    )


class ProtocolPublic(BaseModel):
    states: dict[str, StatesPublic] = Field(description="By kind: job, sweep, trial.")
    layers: list[str] = Field(description="The catalogue's module layer types.")
    losses: list[str] = Field(description="The catalogue's loss types.")
