"""The network spec: an ordered list of layers, a DAG where a layer names its ``inputs``.

Pydantic checks each spec's own fields; what needs PyTorch (shapes, parameter counts) is checked by
``models.nn.build.validate_network`` on the meta device.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from models.settings import get_settings
from models.spec.layers import Layer
from models.spec.types import Pos, Spec

LENET_EXAMPLE: dict[str, Any] = {
    "name": "Net",
    "input_shape": [1, 32, 32],
    "layers": [
        {"name": "conv1", "type": "Conv2d", "in_channels": 1, "out_channels": 6, "kernel_size": 5},
        {"type": "relu"},
        {"type": "max_pool2d", "kernel_size": [2, 2]},
        {"name": "conv2", "type": "Conv2d", "in_channels": 6, "out_channels": 16, "kernel_size": 5},
        {"type": "relu"},
        {"type": "max_pool2d", "kernel_size": 2},
        {"type": "flatten", "start_dim": 1},
        {"name": "fc1", "type": "Linear", "in_features": 400, "out_features": 120},
        {"type": "relu"},
        {"name": "fc2", "type": "Linear", "in_features": 120, "out_features": 84},
        {"type": "relu"},
        {"name": "fc3", "type": "Linear", "in_features": 84, "out_features": 10},
    ],
}


class NetworkSpec(Spec):
    """An ordered list of layers; ``inputs`` on a layer turns the list into a DAG."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [LENET_EXAMPLE]})

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")] = Field(
        default="Net", description="Class name shown in the repr, as in `class Net(nn.Module)`."
    )
    input_shape: Annotated[list[Pos], Field(min_length=1, max_length=5)] = Field(
        description="Shape of one sample; the batch dimension is added by the caller."
    )
    input_dtype: Literal["float32", "float64", "int64"] = Field(
        default="float32", description="int64 for networks that start with an Embedding."
    )
    layers: Annotated[list[Layer], Field(min_length=1)]

    @field_validator("layers", mode="before")
    @classmethod
    def _few_enough(cls, value: Any) -> Any:
        # Counted before any layer is validated: 1.5 million layers took pydantic 10 s of the event loop.
        limit = get_settings().max_layers
        if isinstance(value, list) and len(value) > limit:
            raise PydanticCustomError(
                "too_long",
                "{count} layers exceed the limit of {limit} (GRADSERVE_MAX_LAYERS)",
                {"count": len(value), "limit": limit},
            )
        return value

    def index_layers(self) -> list[dict[str, Any]]:
        """The layers as dicts, for ``models.nn.build.check_indices``."""
        layers: list[dict[str, Any]] = self.model_dump()["layers"]
        return layers
