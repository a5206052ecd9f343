"""Session resource schemas: requests (``*In``) and the responses the workers send back (``*Public``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

from api.schemas.networks import BuiltNetwork
from models.spec.losses import LossSpec
from models.spec.network import LENET_EXAMPLE, NetworkSpec
from models.spec.optimizers import OptimizerSpec
from models.spec.types import Device, Seed
from models.wire.tensors import TensorIn


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionCreate(_In):
    """Either ``network`` (a spec) or ``network_id`` (a stored network), a seed and a device."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {"network": LENET_EXAMPLE, "seed": 0, "device": "cpu", "optimizer": {"type": "SGD", "lr": 0.01}}
            ]
        },
    )

    network: NetworkSpec | None = None
    network_id: str | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] = Field(
        default=0, description="As `torch.manual_seed(seed)` before building the network."
    )
    device: Device = Field(default="auto", description='"auto" picks a GPU when a live worker has one.')
    optimizer: OptimizerSpec | None = Field(
        default=None, description="The optimizer that `step` runs, built over the network's parameters."
    )

    @model_validator(mode="after")
    def _one_network(self) -> SessionCreate:
        if (self.network is None) == (self.network_id is None):
            raise ValueError('give exactly one of "network" (a spec) or "network_id" (from POST /v1/networks)')
        return self


class SessionPublic(BuiltNetwork):
    device: str
    seed: int
    optimizer: dict[str, Any] | None
    network_id: str | None
    format: str = "spec"
    version: int | None = None
    job: dict[str, Any] | None = Field(
        default=None, description="A session opened at a job's step: {id, step}; GET .../batch has that batch."
    )


class ForwardIn(_In):
    input: TensorIn | None = Field(default=None, description="A mini-batch: shape [N, *input_shape].")
    inputs: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")], TensorIn] | None = Field(
        default=None,
        description="An exported network's inputs by name (`input_ids`, `attention_mask`), each a mini-batch.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> ForwardIn:
        if (self.input is None) == (self.inputs is None):
            raise ValueError('send exactly one of "input" (one tensor) and "inputs" (tensors by name)')
        return self


class ForwardPublic(BaseModel):
    output: Any
    shape: list[int]
    dtype: str
    grad_fn: str | None
    warnings: list[str] | None = None
    threads: int | None = Field(default=None, description="PyTorch threads that computed the numbers.")


class LossIn(_In):
    criterion: LossSpec
    target: TensorIn


class LossPublic(BaseModel):
    loss: float | str | list[Any] = Field(description='A number; "nan", "inf" or "-inf" when not finite.')
    shape: list[int]
    grad_fn: str | None
    warnings: list[str] | None = None
    threads: int | None = Field(default=None, description="PyTorch threads that computed the numbers.")


class BackwardIn(_In):
    gradient: TensorIn | None = Field(
        default=None, description="Backprop from the last output with this gradient; absent: from the last loss."
    )
    retain_graph: StrictBool = False


class BackwardPublic(BaseModel):
    backward_from: Literal["loss", "output"]
    retain_graph: bool
    parameters_with_grad: list[str]
    threads: int | None = Field(default=None, description="PyTorch threads that computed the numbers.")


class ZeroGradIn(_In):
    set_to_none: StrictBool = True


class ZeroGradPublic(BaseModel):
    set_to_none: bool


class TrainIn(_In):
    mode: StrictBool = Field(default=True, description="True: net.train(); false: net.eval().")


class TrainPublic(BaseModel):
    training: bool


class ManualSeedIn(_In):
    seed: Seed


class ManualSeedPublic(BaseModel):
    seed: int


class SgdUpdateIn(_In):
    lr: Annotated[StrictFloat | StrictInt, Field(gt=0)]


class SgdUpdatePublic(BaseModel):
    lr: float
    updated: int
    threads: int | None = Field(default=None, description="PyTorch threads that computed the numbers.")


class StepPublic(BaseModel):
    optimizer: str
    updated: int
    threads: int | None = Field(default=None, description="PyTorch threads that computed the numbers.")


class ParameterPublic(BaseModel):
    name: str
    kind: Literal["parameter", "buffer"]
    shape: list[int]
    dtype: str
    data: Any
    grad: Any = Field(description="null when the parameter's grad is None.")
    requires_grad: bool
    threads: int | None = Field(default=None, description="PyTorch threads that computed the numbers.")


class GraphNode(BaseModel):
    id: str
    name: str
    param: dict[str, Any] | None = None
    saved: dict[str, Any] | None = None


class GraphEdge(BaseModel):
    source: str
    target: str
    index: int
    input_nr: int


class GraphPublic(BaseModel):
    of: Literal["loss", "output"]
    root: str | None
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    truncated: bool
    max_nodes: int


class StateLoaded(BaseModel):
    loaded: int
