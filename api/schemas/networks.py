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
    spec: dict[str, Any]
    created_at: float | None = None


class NetworksPublic(BaseModel):
    data: list[NetworkPublic]
    count: int
    total: int
    next_offset: int | None
