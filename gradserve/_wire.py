"""Tensors on the wire as safetensors bytes: a call's body (tensors by argument name, other arguments as
JSON in metadata ``args``) and an answer (tensors by field name, the rest as JSON in metadata ``json``)."""

from __future__ import annotations

import json
import struct
from typing import Any

import torch
from safetensors.torch import load, save

OCTET = "application/octet-stream"


def pack(tensors: dict[str, torch.Tensor], args: dict[str, Any] | None = None) -> bytes:
    """A call body: what the server reads with ``Content-Type: application/octet-stream``."""
    ready = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return save(ready, metadata={"args": json.dumps(args or {})})


def metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file: its header is an 8-byte length, then JSON."""
    if len(blob) < 8:
        raise ValueError("not a safetensors file: shorter than its 8-byte header length")
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + size])
    meta: dict[str, str] = header.get("__metadata__") or {}
    return meta


def unpack(blob: bytes) -> dict[str, Any]:
    """An answer in the binary form as one dict: its JSON fields with its tensors in place."""
    rest = json.loads(metadata(blob).get("json", "{}"))
    return {**rest, **load(blob)}


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A state_dict as safetensors (shared storages copied apart, as safetensors needs)."""
    return save({k: v.detach().clone().contiguous().cpu() for k, v in state.items()})


def number(value: Any) -> float:
    """A number from a JSON answer, where non-finite values travel as the strings "nan", "inf", "-inf"."""
    return float(value)
