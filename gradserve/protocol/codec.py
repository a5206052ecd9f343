"""The binary form of a session call and of its answer, both ends of it: a safetensors file holding the
tensors under their argument (or field) names, and everything else as one JSON object in its metadata,
under ``args`` in a call and ``json`` in an answer. Sent and answered as ``application/octet-stream``.

Reading a header needs no torch; making or reading tensors imports safetensors' torch half on first use.
The server checks what a client sends on top of this (sizes, names: ``models/wire``).
"""

from __future__ import annotations

import contextlib
import json
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

OCTET = "application/octet-stream"
ARGS_KEY = "args"  # call metadata: the call's other arguments
JSON_KEY = "json"  # answer metadata: the rest of the JSON answer


def safetensors_header(blob: bytes) -> dict[str, Any]:
    """A safetensors file's JSON header (an 8-byte length, then JSON), always with a ``__metadata__`` dict;
    empty when unreadable (loading the tensors then says why)."""
    header: Any = None
    if len(blob) >= 8:
        (size,) = struct.unpack("<Q", blob[:8])
        if size <= len(blob) - 8:
            # a deeply nested header is a RecursionError: unreadable, like any other broken header
            with contextlib.suppress(ValueError, RecursionError):
                header = json.loads(blob[8 : 8 + size])
    if not isinstance(header, dict):
        header = {}
    meta = header.get("__metadata__")
    return {**header, "__metadata__": meta if isinstance(meta, dict) else {}}


def safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` header of a safetensors file, read without loading its tensors."""
    meta: dict[str, str] = safetensors_header(blob)["__metadata__"]
    return meta


def to_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Tensors as safetensors; one storage under two names (tied weights) is copied apart, as safetensors needs."""
    from safetensors.torch import save

    seen: set[int] = set()
    ready = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.device.type != "meta" else id(v)
        ready[k] = v.detach().cpu().contiguous() if ptr not in seen else v.detach().cpu().clone()
        seen.add(ptr)
    return save(ready, metadata=metadata)


def pack_call(tensors: dict[str, torch.Tensor], args: dict[str, Any] | None = None) -> bytes:
    """A call's binary body: what a client sends with ``Content-Type: application/octet-stream``."""
    return to_safetensors(tensors, {ARGS_KEY: json.dumps(args or {})})


def pack_answer(body: dict[str, Any]) -> bytes:
    """An answer's binary form: its tensor fields as tensors, the rest as JSON metadata (written by the
    service, with orjson as its JSON answers are: a non-finite float is null there too)."""
    import orjson
    import torch

    tensors = {k: v for k, v in body.items() if isinstance(v, torch.Tensor)}
    rest = {k: v for k, v in body.items() if not isinstance(v, torch.Tensor)}
    return to_safetensors(tensors, {JSON_KEY: orjson.dumps(rest).decode()})


def unpack_answer(blob: bytes) -> dict[str, Any]:
    """An answer in the binary form back as one dict: its JSON fields with its tensors in place."""
    from safetensors.torch import load

    rest = json.loads(safetensors_metadata(blob).get(JSON_KEY, "{}"))
    return {**rest, **load(blob)}
