"""Sizes of uploaded tensor files read from their headers alone, so a file that would decode to more
than a limit is refused before anything is decoded: a few KB of compressed .npz (or an .npy header
that simply claims a 10^6 x 10^6 array) must never make the API allocate gigabytes."""

from __future__ import annotations

import io
import math
import struct
import zipfile
from typing import IO, Any

import numpy as np
import orjson

from models.errors import InvalidInput, Loc, PayloadTooLarge
from models.wire.zip_members import member_prefix

# An .npy file's magic, version and header: numpy refuses headers over 10,000 bytes (max_header_size).
NPY_HEADER_ROOM = 16 * 1024
# safetensors' own limit on its JSON header; a longer one is refused by the library anyway.
MAX_SAFETENSORS_HEADER = 100_000_000
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def npz_decoded_bytes(blob: bytes, *, loc: Loc) -> dict[str, int]:
    """Bytes each array of an .npz file takes once loaded, as its .npy header declares (no data read).

    Integer arrays count at the width they are stored at after widening (int8/int16 to int32, unsigned
    wider than uint8 to int64). Only each member's first NPY_HEADER_ROOM bytes are inflated."""
    sizes: dict[str, int] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                with io.BytesIO(member_prefix(blob, info, NPY_HEADER_ROOM, loc=loc)) as member:
                    shape, _, dtype = read_npy_header(member, name, loc)
                sizes[name] = math.prod(shape) * _stored_itemsize(dtype)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, struct.error) as exc:
        raise InvalidInput(f"not a readable .npz file: {exc}", loc) from exc
    return sizes


def read_npy_header(member: IO[bytes], name: str, loc: Loc) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """An .npy member's shape, Fortran order and dtype, read from its header alone; object arrays (which
    only a pickle could hold) are refused."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise InvalidInput(f"array '{name}' is in .npy format {version}; save it with numpy", loc)
    if dtype.hasobject:
        raise InvalidInput(f"array '{name}' holds Python objects (object arrays are refused: no pickle)", loc)
    return tuple(shape), bool(fortran), dtype


def _stored_itemsize(dtype: np.dtype) -> int:
    if dtype.kind == "i" and dtype.itemsize < 4 and dtype.itemsize > 1:
        return 4
    if dtype.kind == "u" and dtype.itemsize > 1:
        return 8
    return int(dtype.itemsize)


def safetensors_decoded_bytes(blob: bytes, *, loc: Loc, max_header: int = MAX_SAFETENSORS_HEADER) -> dict[str, int]:
    """Bytes each tensor of a safetensors file takes, from its JSON header (shapes and dtypes); a header
    over ``max_header`` bytes is a 413 before it is parsed."""
    if len(blob) < 8:
        raise InvalidInput("not a valid safetensors file: shorter than its 8-byte header length", loc)
    (size,) = struct.unpack("<Q", blob[:8])
    if size > min(len(blob) - 8, MAX_SAFETENSORS_HEADER):
        raise InvalidInput(f"not a valid safetensors file: its header claims {size:,} bytes", loc)
    if size > max_header:
        raise PayloadTooLarge(
            f"the safetensors file's header has {size:,} bytes; the limit here is {max_header:,}", loc
        )
    try:
        header = orjson.loads(blob[8 : 8 + size])  # depth-capped: a RecursionError was a 500
        return {
            name: math.prod(int(d) for d in entry["shape"]) * _SAFETENSORS_ITEMSIZE.get(entry["dtype"], 8)
            for name, entry in header.items()
            if name != "__metadata__"
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidInput(f"not a valid safetensors file: unreadable header ({exc})", loc) from exc
