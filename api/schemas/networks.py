"""Network resource schemas."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ParameterInfo(BaseModel):
    name: str
    shape: list[int]
    numel: int


class BuiltNetwork(BaseModel):
    """What building a spec tells: the same for a stored network and a session's live one."""

    id: str
    repr: str
    parameters: list[ParameterInfo]
    num_parameters: int
    num_elements: int
    output_shape: list[int]


class NetworkPublic(BuiltNetwork):
    activation_bytes_per_sample: int
    format: str = "spec"  # "spec": the catalogue's JSON; "export": a torch.export program
    spec: dict[str, Any] | None
    form: dict[str, Any] | None = None  # an exported network's inputs, outputs, frozen and tied names
    modes: list[str] | None = None
    created_at: float | None = None


class NetworksPublic(BaseModel):
    data: list[NetworkPublic]
    count: int
    total: int
    next_offset: int | None
