"""Image transforms declared on a job's dataset, named and defined as torchvision's tensor transforms are
(``Resize``, ``CenterCrop``, ``RandomCrop``, ``RandomHorizontalFlip``, ``Normalize``); applied in order to
float32 (C, H, W) images by ``models.data.transforms``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from models.spec.types import Pos

# A size: one number (a square for crops; the shorter edge for resize, keeping the aspect ratio), or [h, w].
Size = Pos | Annotated[list[Pos], Field(min_length=2, max_length=2)]


class _Transform(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resize(_Transform):
    """``torchvision.transforms.Resize(size)`` on a tensor: bilinear, antialiased."""

    type: Literal["resize"]
    size: Size


class CenterCrop(_Transform):
    type: Literal["center_crop"]
    size: Size


class RandomCrop(_Transform):
    """A crop at a random place, after zero ``padding`` on every side (CIFAR's ``RandomCrop(32, padding=4)``)."""

    type: Literal["random_crop"]
    size: Size
    padding: Annotated[StrictInt, Field(ge=0, le=1024)] = 0


class RandomHorizontalFlip(_Transform):
    type: Literal["random_horizontal_flip"]
    p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5


class Normalize(_Transform):
    """``(x - mean[c]) / std[c]`` per channel."""

    type: Literal["normalize"]
    mean: Annotated[list[StrictFloat | StrictInt], Field(min_length=1, max_length=64)]
    std: Annotated[list[Annotated[float, Field(gt=0.0)]], Field(min_length=1, max_length=64)]


TransformSpec = Annotated[
    Resize | CenterCrop | RandomCrop | RandomHorizontalFlip | Normalize, Field(discriminator="type")
]
RANDOM = ("random_crop", "random_horizontal_flip")
