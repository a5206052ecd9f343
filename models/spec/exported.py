"""The exported network form's description: what travels beside the program and its weights.

The program (torch's export serialization, JSON) says how to compute; this says what a person and
the service need around it: the class name and ``repr`` the user's module prints, the inputs by name
with their per-sample shapes (``null`` for a dimension that may vary), which flattened output the loss
reads, which parameters are frozen, and which names share one parameter (tied embeddings).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from models.spec.types import Pos, Spec

MAX_REPR_CHARS = 200_000
DynDim = Pos | None
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
StateName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]{1,512}$")]


class ExportedInput(Spec):
    name: Name = Field(description="The forward parameter's name: the key of this input in `inputs`.")
    dtype: str = Field(pattern=r"^(float32|float64|float16|bfloat16|int64|int32|bool)$")
    shape: Annotated[list[DynDim], Field(max_length=8)] = Field(
        description="One sample's shape (the batch dimension, always first and variable, left out); "
        "null where the dimension may vary, e.g. a sequence length."
    )
    example: Annotated[list[Pos], Field(max_length=8)] = Field(
        description="One sample's shape as exported: sizes memory is estimated at."
    )

    @model_validator(mode="after")
    def _example_fits(self) -> ExportedInput:
        if len(self.example) != len(self.shape) or any(
            d is not None and d != e for d, e in zip(self.shape, self.example, strict=True)
        ):
            raise ValueError(f"example {self.example} does not fit shape {self.shape}")
        return self


class ExportedForm(Spec):
    """Everything about an exported network but its graph and tensors."""

    name: Name = Field(default="Net", description="The module's class name.")
    repr: Annotated[str, Field(max_length=MAX_REPR_CHARS)] = Field(description="`repr(module)`, shown as is.")
    inputs: Annotated[list[ExportedInput], Field(min_length=1, max_length=16)]
    outputs: Annotated[list[Annotated[str, Field(max_length=200)]], Field(min_length=1, max_length=256)] = Field(
        description="The flattened outputs' paths, as torch.utils._pytree.keystr writes them (`['logits']`)."
    )
    output: int = Field(default=0, ge=0, description="Index in `outputs` of the tensor the loss reads.")
    frozen: Annotated[list[StateName], Field(max_length=100_000)] = Field(
        default_factory=list, description="Parameters with requires_grad=False: no grad, no update."
    )
    tied: dict[StateName, StateName] = Field(
        default_factory=dict, description="Parameter names that are the same tensor as another (name -> owner)."
    )
    batch: Pos | None = Field(
        default=None, description="The one batch size the program takes, when it was exported at a fixed batch."
    )
    state_order: Annotated[list[StateName], Field(max_length=100_000)] = Field(
        default_factory=list, description="The module's state_dict keys in its own order."
    )

    @model_validator(mode="after")
    def _output_exists(self) -> ExportedForm:
        if self.output >= len(self.outputs):
            raise ValueError(f"output {self.output} is not one of the {len(self.outputs)} outputs")
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names repeat: {names}")
        return self
