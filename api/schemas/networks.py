"""Network resource schemas."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ParameterInfo(BaseModel):
    name: str
    shape: list[int]
    numel: int


class NetworkPublic(BaseModel):
    id: str
    repr: str
    parameters: list[ParameterInfo]
    num_parameters: int
    num_elements: int
    output_shape: list[int]
    activation_bytes_per_sample: int
    spec: dict[str, Any]
