"""Tensor codecs: JSON on the wire for small tensors, safetensors for large ones. Never pickle.

JSON forms accepted (``decode``): a nested list (decoded as ``torch.tensor(value)`` decodes it:
floats -> float32, integers -> int64); ``{"data": [...], "dtype": "float64"}``; or a generator
``{"randn": [1, 1, 32, 32], "seed": 7}`` (also ``rand``, ``zeros``, ``ones``) meaning
``torch.randn(shape, generator=torch.Generator().manual_seed(seed))``.
"""

from __future__ import annotations

import math
import struct
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictInt, Tag
from safetensors.torch import load as st_load

from gradserve.protocol.codec import safetensors_header as safetensors_header
from gradserve.protocol.codec import safetensors_metadata as safetensors_metadata
from gradserve.protocol.codec import to_safetensors as to_safetensors
from models.errors import InvalidInput, Loc, PayloadTooLarge

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# Tensors in one safetensors file a client sends: safetensors makes each one in Python (~60 us apiece:
# 200,000 took 12 s of the API's CPU), and the largest model states hold a few thousand.
MAX_SAFETENSORS_TENSORS = 16_384
HEADER_BYTES_PER_TENSOR = 256  # a generous average of name, dtype, shape and offsets, metadata included


def dtype_name(t: torch.Tensor) -> str:
    """``float32`` rather than ``torch.float32``: the spelling the wire forms use."""
    return DTYPE_NAMES.get(t.dtype, str(t.dtype).removeprefix("torch."))


DTypeName = Literal["float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8", "bool"]
# What torch.Generator.manual_seed takes; outside it, it raised a RuntimeError (a 500).
GeneratorSeed = Annotated[StrictInt, Field(ge=-(2**63), lt=2**64)]
Shape = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(max_length=8)]


class _Form(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TypedTensor(_Form):
    data: Any
    dtype: DTypeName = "float32"


class RandnTensor(_Form):
    randn: Shape
    seed: GeneratorSeed = 0
    dtype: Literal["float32", "float64"] = "float32"


class RandTensor(_Form):
    rand: Shape
    seed: GeneratorSeed = 0
    dtype: Literal["float32", "float64"] = "float32"


class ZerosTensor(_Form):
    zeros: Shape
    dtype: DTypeName = "float32"


class OnesTensor(_Form):
    ones: Shape
    dtype: DTypeName = "float32"


_FORMS = {"data": TypedTensor, "randn": RandnTensor, "rand": RandTensor, "zeros": ZerosTensor, "ones": OnesTensor}


def _tensor_form(value: Any) -> str | None:
    """Which form a value is, from its shape alone, so that a mistake in e.g. ``{"randn": [-1]}`` is
    reported on that form's field, not as seven errors, one per form it also fails to be."""
    if isinstance(value, dict):
        return next((key for key in _FORMS if key in value), None)
    if isinstance(value, BaseModel):
        return next((key for key, cls in _FORMS.items() if isinstance(value, cls)), None)
    if isinstance(value, list):
        return "list"
    # bool is an int to Python, and lax float validation made False a 0.0: a boolean is no tensor.
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# What request models declare for a tensor field: a nested list or number, or one of the forms above.
TensorIn = Annotated[
    Annotated[list[Any], Tag("list")]
    | Annotated[float, Tag("number")]
    | Annotated[TypedTensor, Tag("data")]
    | Annotated[RandnTensor, Tag("randn")]
    | Annotated[RandTensor, Tag("rand")]
    | Annotated[ZerosTensor, Tag("zeros")]
    | Annotated[OnesTensor, Tag("ones")],
    Discriminator(
        _tensor_form,
        custom_error_type="tensor_form",
        custom_error_message=(
            'a tensor is a nested list of numbers, {"data": [...], "dtype": ...}, or a generator such as '
            '{"randn": [shape], "seed": 0} (also rand, zeros, ones)'
        ),
    ),
]


def decode(value: Any, *, max_elements: int, loc: Loc = ()) -> torch.Tensor:
    """Turn any accepted JSON form into a CPU tensor, refusing more than ``max_elements`` elements."""
    if isinstance(value, (RandnTensor, RandTensor, ZerosTensor, OnesTensor)):
        shape = next(getattr(value, k) for k in ("randn", "rand", "zeros", "ones") if k in type(value).model_fields)
        _check_count(math.prod(shape), max_elements, loc)
        dtype = DTYPES[value.dtype]
        if isinstance(value, RandnTensor):
            return torch.randn(shape, generator=torch.Generator().manual_seed(value.seed), dtype=dtype)
        if isinstance(value, RandTensor):
            return torch.rand(shape, generator=torch.Generator().manual_seed(value.seed), dtype=dtype)
        return (torch.zeros if isinstance(value, ZerosTensor) else torch.ones)(shape, dtype=dtype)
    data, wanted = (value.data, DTYPES[value.dtype]) if isinstance(value, TypedTensor) else (value, None)
    try:
        tensor = torch.tensor(data, dtype=wanted)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise InvalidInput(f"not a tensor: {exc} (expected a nested list of numbers of equal lengths)", loc) from exc
    _check_count(tensor.numel(), max_elements, loc)
    return tensor


def describe_array(t: torch.Tensor) -> dict[str, Any]:
    """Shape and dtype of a dataset array, plus ``min``/``max`` when every value is a whole number, or
    ``integral: false``: what the job planner needs to refuse bad labels or indices before a job runs."""
    info: dict[str, Any] = {"shape": list(t.shape), "dtype": dtype_name(t)}
    if t.numel() == 0 or t.dtype == torch.bool:
        return info
    if t.is_floating_point() and not bool((torch.isfinite(t) & (t == t.round())).all()):
        return {**info, "integral": False}
    lo, hi = torch.aminmax(t)
    return {**info, "integral": True, "min": int(lo), "max": int(hi)}


def _check_count(count: int, max_elements: int, loc: Loc) -> None:
    if count > max_elements:
        raise InvalidInput(
            f"tensor has {count:,} elements; JSON tensors are limited to {max_elements:,} "
            "(GRADSERVE_MAX_TENSOR_ELEMENTS); send large tensors as safetensors",
            loc,
        )


def encode(tensor: torch.Tensor) -> dict[str, Any]:
    """``{"data", "shape", "dtype"}``. Non-finite floats have no JSON form, so they are sent as strings."""
    t = tensor.detach().cpu()
    data = t.tolist()
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        data = _stringify_nonfinite(data)
    return {"data": data, "shape": list(t.shape), "dtype": dtype_name(t)}


def scalar(value: float) -> float | str:
    """A float for JSON: finite values as numbers, the rest as ``"nan"``, ``"inf"``, ``"-inf"``."""
    return value if math.isfinite(value) else str(value)


def _stringify_nonfinite(data: Any) -> Any:
    if isinstance(data, list):
        return [_stringify_nonfinite(v) for v in data]
    return scalar(data) if isinstance(data, float) else data


def from_safetensors(blob: bytes, *, loc: Loc = ("body",)) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; more than MAX_SAFETENSORS_TENSORS (or a header too long to hold
    no more) is a 413 before any is made."""
    size = struct.unpack("<Q", blob[:8])[0] if len(blob) >= 8 else 0
    # A length past the file's end is no header at all: st_load's 422 says the file is not safetensors.
    if MAX_SAFETENSORS_TENSORS * HEADER_BYTES_PER_TENSOR < size <= len(blob) - 8:
        raise PayloadTooLarge(
            f"the safetensors file at {'.'.join(map(str, loc))} has a header of {size:,} bytes; the limit is "
            f"{MAX_SAFETENSORS_TENSORS * HEADER_BYTES_PER_TENSOR:,} ({MAX_SAFETENSORS_TENSORS:,} tensors)",
            loc,
        )
    count = len(safetensors_header(blob)) - 1  # less __metadata__, or the absent header's pretend one
    if count > MAX_SAFETENSORS_TENSORS:
        raise PayloadTooLarge(
            f"the safetensors file at {'.'.join(map(str, loc))} holds {count:,} tensors; "
            f"the limit is {MAX_SAFETENSORS_TENSORS:,}",
            loc,
        )
    try:
        return st_load(blob)
    except Exception as exc:  # safetensors raises its own SafetensorError and others on corrupt input
        raise InvalidInput(f"not a valid safetensors file: {exc}", loc) from exc
