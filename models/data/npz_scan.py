"""A streamed .npz upload checked from the file it was spooled to, one chunk of each array at a time, so the
API's memory stays bounded however large the file: the headers (names, shapes, dtypes, no object arrays), the
sizes against the dataset limits, and the values the job planner needs (``min``/``max``, whole numbers or not,
unsigned values within int64). The file is stored as received; a job's worker loads it with
``models.data.arrays.parse_arrays``, which repeats every check on the whole arrays."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from models.data.arrays import ARRAYS, LOC, known_arrays
from models.errors import InvalidInput, PayloadTooLarge
from models.wire.file_headers import read_npy_header

# Bytes of one array read at a time: the scan's memory, whatever the file's size.
CHUNK_BYTES = 4 * 1024 * 1024
# What np.savez and np.savez_compressed write; zipfile inflates deflate a bounded step at a time.
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
INT64_MAX = np.iinfo(np.int64).max
Header = tuple[tuple[int, ...], bool, np.dtype[Any]]  # shape, Fortran order, dtype


def scan_npz(path: Path, *, max_bytes: int, max_elements: int) -> dict[str, Any]:
    """``num_samples`` and ``arrays`` (as ``describe_array`` gives them) of the .npz file at ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            known_arrays(info.filename.removesuffix(".npy") for info in members)
            for info in members:
                if info.compress_type not in METHODS or info.flag_bits & 0x1:
                    # bzip2 and the rest are refused unread: zipfile inflates them a whole compressed chunk
                    # at a time, which a bomb turns into hundreds of megabytes per read.
                    how = "encrypted" if info.flag_bits & 0x1 else f"compressed by zip method {info.compress_type}"
                    how += " (bzip2)" if info.compress_type == zipfile.ZIP_BZIP2 else ""
                    raise InvalidInput(
                        f"member '{info.filename}' is {how}; accepted: stored or deflate, what numpy.savez and "
                        "numpy.savez_compressed write",
                        LOC,
                    )
            headers = {}
            for info in members:
                with archive.open(info) as member:
                    headers[info.filename.removesuffix(".npy")] = _header(member, info.filename)
            _check_sizes(headers, max_bytes=max_bytes, max_elements=max_elements)
            arrays = {}
            for info in members:
                name = info.filename.removesuffix(".npy")
                with archive.open(info) as member:
                    _header(member, info.filename)
                    arrays[name] = _scan(member, name, *headers[name])
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(f"not a readable .npz file (object arrays are refused): {exc}", LOC) from exc
    return {"num_samples": int(arrays["inputs"]["shape"][0]), "arrays": arrays}


def _header(member: IO[bytes], filename: str) -> Header:
    name = filename.removesuffix(".npy")
    shape, fortran, dtype = read_npy_header(member, name, LOC)
    if dtype.kind not in "biuf":
        raise InvalidInput(f"array '{name}' has dtype {dtype}; only numbers are accepted", (*LOC, name))
    return shape, fortran, dtype


def _check_sizes(
    headers: dict[str, tuple[tuple[int, ...], bool, np.dtype[Any]]], *, max_bytes: int, max_elements: int
) -> None:
    sizes = {name: math.prod(shape) * _widened(dtype).itemsize for name, (shape, _, dtype) in headers.items()}
    decoded = sum(sizes.values())
    if decoded > max_bytes:
        raise PayloadTooLarge(
            f"the .npz file's arrays would take {decoded:,} bytes once decoded "
            f"({', '.join(f'{k}: {v:,}' for k, v in sizes.items())}); the limit is {max_bytes:,} "
            "(GRADSERVE_MAX_DATASET_BYTES)"
        )
    total = sum(math.prod(shape) for shape, _, _ in headers.values())
    if total > max_elements:
        raise PayloadTooLarge(
            f"the dataset has {total:,} values; the limit is {max_elements:,} (GRADSERVE_MAX_DATASET_ELEMENTS)"
        )
    for prefix in ("", "test_"):
        x, y = headers.get(prefix + "inputs"), headers.get(prefix + "targets")
        if (x is None) != (y is None) or (prefix == "" and x is None):
            raise InvalidInput(f"the file needs arrays '{prefix}inputs' and '{prefix}targets' together", LOC)
        if x is None or y is None:
            continue
        if not x[0] or not y[0] or x[0][0] != y[0][0] or x[0][0] == 0:
            raise InvalidInput(
                f"{prefix}inputs {list(x[0])} and {prefix}targets {list(y[0])} need the same "
                "non-zero number of rows (samples)",
                (*LOC, prefix + "inputs"),
            )
        if x[2].kind == "b":
            raise InvalidInput(
                f"array '{prefix}inputs' has dtype bool; use float32/64 or integers", (*LOC, prefix + "inputs")
            )
    assert set(headers) <= set(ARRAYS)


def _widened(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype the array is loaded at (``parse_arrays``): int8/int16 as int32, unsigned wider than uint8 as int64."""
    if dtype.kind == "i" and dtype.itemsize < 4:
        return np.dtype(np.int32)
    if dtype.kind == "u" and dtype.itemsize > 1:
        return np.dtype(np.int64)
    return dtype.newbyteorder("=")


def _scan(member: IO[bytes], name: str, shape: tuple[int, ...], fortran: bool, dtype: np.dtype[Any]) -> dict[str, Any]:
    """The array's description from its data, read CHUNK_BYTES at a time (the order, C or Fortran, does not
    change a minimum or a maximum)."""
    count = math.prod(shape)
    step = max(1, CHUNK_BYTES // dtype.itemsize) * dtype.itemsize
    integral, lo, hi, seen = True, None, None, 0
    while seen < count:
        raw = member.read(min(step, (count - seen) * dtype.itemsize))
        if len(raw) % dtype.itemsize or not raw:
            raise InvalidInput(f"array '{name}' is truncated: {seen:,} of {count:,} values", (*LOC, name))
        values = np.frombuffer(raw, dtype=dtype)
        seen += values.size
        if dtype.kind == "b":
            continue
        if dtype.kind == "f":
            whole = bool((np.isfinite(values) & (values == np.round(values))).all())
            integral = integral and whole
            if not integral:
                continue
        c_lo, c_hi = values.min(), values.max()
        lo = c_lo if lo is None else min(lo, c_lo)
        hi = c_hi if hi is None else max(hi, c_hi)
    if member.read(1):
        raise InvalidInput(f"array '{name}' has more data than its shape {list(shape)} holds", (*LOC, name))
    info: dict[str, Any] = {"shape": list(shape), "dtype": _DTYPE_NAMES[_widened(dtype).name]}
    if dtype.kind == "u" and hi is not None and int(hi) > INT64_MAX:
        raise InvalidInput(f"array '{name}' holds values above the int64 range", (*LOC, name))
    if count == 0 or dtype.kind == "b":
        return info
    if not integral:
        return {**info, "integral": False}
    assert lo is not None and hi is not None
    return {**info, "integral": True, "min": int(lo), "max": int(hi)}


_DTYPE_NAMES = {
    "float16": "float16", "float32": "float32", "float64": "float64", "int32": "int32", "int64": "int64",
    "uint8": "uint8", "bool": "bool",
}  # fmt: skip
