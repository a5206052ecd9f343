"""The session call protocol, both ends of it: what the API sends a worker and what comes back.

- **Tensor references** ride in a call's JSON arguments: ``{"wire": base64 safetensors}`` when small,
  ``{"key": redis key}`` when the API parked the bytes in Redis (``"raw": true``: bytes, not a tensor).
- **Reply frames** are what a worker pushes onto ``Keys.reply``: a kind byte, the milliseconds the
  worker spent (ASCII) and a newline, then ``j`` a JSON body, ``r`` a media type line and raw bytes,
  or ``e`` a ``GradserveError.to_dict()``.
- **Claims and call ids**: a call has a call id (the client's ``Idempotency-Key``, or a fresh one)
  and each time the API sends it, an attempt id. The worker that takes an attempt claims it by
  writing its name under ``Keys.call_claim``; an API that gives up on an attempt not yet taken
  claims it as ``ABANDONED`` first, so an attempt is either run or answered as not run, never both.
  A worker counts as dead once its heartbeat is older than two beats (``heartbeat_stale``).
- **Binary bodies** are the ``application/octet-stream`` form of a call or an answer, written and read
  by ``gradserve.protocol.codec`` (shared with the client); here they are checked against what a call takes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson
import torch

from gradserve.protocol.codec import ARGS_KEY, pack_answer, safetensors_metadata, to_safetensors
from gradserve.protocol.codec import OCTET as OCTET
from models.errors import GradserveError, InvalidInput
from models.wire.tensors import encode, from_safetensors

# Above this many bytes a tensor goes to Redis by key: the broker base64-encodes messages twice over.
INLINE_MAX_BYTES = 64 * 1024
# The tensor-valued arguments a session call may take, in any request form.
TENSOR_ARGS = ("input", "inputs", "target", "gradient")
ABANDONED = "abandoned"
# What an Idempotency-Key may be: it becomes part of Redis keys.
CALL_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


def heartbeat_stale(pttl_ms: int, ttl_s: float) -> bool:
    """A worker is dead once its heartbeat key (``pttl_ms`` left of ``ttl_s``; negative: gone) has gone
    unrenewed for two beats; it renews every third of its TTL."""
    if pttl_ms < 0:
        return True
    return ttl_s * 1000 - pttl_ms > 2 * ttl_s / 3 * 1000


# --- tensor references -------------------------------------------------------------------------------------------


def tensor_ref(tensor: torch.Tensor, key: str) -> tuple[dict[str, Any], bytes | None]:
    """The reference to put in the call and, when it is too big to ride inline, the bytes to store at ``key``."""
    blob = to_safetensors({"t": tensor})
    if len(blob) <= INLINE_MAX_BYTES:
        return {"wire": base64.b64encode(blob).decode("ascii")}, None
    return {"key": key}, blob


def raw_ref(key: str) -> dict[str, Any]:
    """A reference to bytes the worker takes as they are (an uploaded state file)."""
    return {"key": key, "raw": True}


def read_ref(name: str, ref: dict[str, Any], fetch: Callable[[str], bytes | None]) -> torch.Tensor | bytes:
    """The tensor (or raw bytes) behind ``ref``; ``fetch`` takes a stored one out of Redis."""
    if "wire" in ref:
        return from_safetensors(base64.b64decode(ref["wire"]), loc=("body", name))["t"]
    blob = fetch(ref["key"])
    if blob is None:
        raise InvalidInput(
            f"the uploaded '{name}' expired before a worker took the call; send it again", ("body", name)
        )
    return blob if ref.get("raw") else from_safetensors(blob, loc=("body", name))["t"]


# --- reply frames ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    body: bytes
    media: str = "application/json"
    worker_ms: float = 0.0  # time the worker spent on the call
    call_ms: float = 0.0  # enqueue to answer, as the API saw it
    call_id: str = ""

    @property
    def server_timing(self) -> str:
        return f"worker;dur={self.worker_ms:.3f}, call;dur={self.call_ms:.3f}"


def answer_frame(body: Any, *, media: str | None = None, binary: bool = False) -> bytes:
    """A success frame. A dict body may hold tensors: nested lists in JSON, tensors in the binary form."""
    if media is not None:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        return b"r\n" + media.encode() + b"\n" + raw
    if binary:
        return b"r\n" + OCTET.encode() + b"\n" + pack_answer(body)
    return b"j\n" + orjson.dumps(answer_to_json(body))


def error_frame(error: GradserveError) -> bytes:
    return b"e\n" + orjson.dumps(error.to_dict())


def stamp(frame: bytes, spent_ms: float) -> bytes:
    """The frame with the worker's time written in after its kind byte."""
    return frame[:1] + f"{spent_ms:.3f}".encode() + frame[1:]


def read_frame(frame: bytes, call_ms: float = 0.0) -> Reply:
    """The answer in a frame; an error frame is raised again with the worker's status, ``loc`` and message."""
    kind = frame[:1]
    spent, _, rest = frame[1:].partition(b"\n")
    if kind == b"j":
        return Reply(rest, worker_ms=float(spent), call_ms=call_ms)
    if kind == b"r":
        media, _, body = rest.partition(b"\n")
        return Reply(body, media.decode(), worker_ms=float(spent), call_ms=call_ms)
    raise GradserveError.from_dict(orjson.loads(rest))


# --- answers -----------------------------------------------------------------------------------------------------


def answer_to_json(body: Any) -> Any:
    """Tensors at the top level of an answer become nested lists (non-finite values as strings)."""
    if not isinstance(body, dict):
        return body
    return {k: encode(v)["data"] if isinstance(v, torch.Tensor) else v for k, v in body.items()}


# --- requests ----------------------------------------------------------------------------------------------------


def read_binary_body(blob: bytes, allowed: Collection[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and other arguments of a binary call body, refusing what the call does not take."""
    tensors = from_safetensors(blob, loc=("body",))
    raw = safetensors_metadata(blob).get(ARGS_KEY)
    try:  # orjson caps nesting depth, where json recursed until a RecursionError (a 500)
        args = {} if raw is None else orjson.loads(raw)
    except ValueError as exc:
        raise InvalidInput(
            f"the safetensors metadata '{ARGS_KEY}' must be a JSON object of the call's other arguments: {exc}",
            ("body", "__metadata__", ARGS_KEY),
        ) from exc
    if not isinstance(args, dict):
        raise InvalidInput(
            f"the safetensors metadata '{ARGS_KEY}' must be a JSON object, not {type(args).__name__}",
            ("body", "__metadata__", ARGS_KEY),
        )
    takes = ", ".join("inputs.<name>" if a == "inputs" else a for a in allowed) or "no tensors"
    for name in tensors:
        named = name.startswith("inputs.") and "inputs" in allowed  # an exported network's input by name
        if (name not in allowed or name == "inputs") and not named:
            raise InvalidInput(f"unknown tensor '{name}' in the body; this call takes: {takes}", ("body", name))
    for name in args:
        if name in allowed:
            raise InvalidInput(
                f"'{name}' is a tensor: put it in the safetensors body, not in the '{ARGS_KEY}' metadata",
                ("body", "__metadata__", ARGS_KEY, name),
            )
    return tensors, args
