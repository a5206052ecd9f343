"""Arrays datasets (npz and safetensors) read in full and checked: what a job's worker loads, and what the API
checked before uploads were streamed (``models.data.npz_scan`` checks a streamed .npz a chunk at a time).
Never pickle: an object array is refused, not loaded."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable

import numpy as np
import torch

from models.errors import InvalidInput, PayloadTooLarge
from models.settings import Settings
from models.wire.file_headers import NPY_HEADER_ROOM, npz_decoded_bytes, safetensors_decoded_bytes
from models.wire.tensors import DTYPE_NAMES, from_safetensors
from models.wire.zip_members import member_bytes

ARRAYS = ("inputs", "targets", "test_inputs", "test_targets")
LOC = ("body",)
# A dataset's safetensors header names four arrays at most: 200,000 names took seconds to parse.
MAX_HEADER_BYTES = 64 * 1024


def parse_dataset(blob: bytes, settings: Settings) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a safetensors or .npz file (never pickle) and check its arrays, under the dataset limits."""
    return parse_arrays(blob, max_bytes=settings.max_dataset_bytes, max_elements=settings.max_dataset_elements)


def parse_arrays(blob: bytes, *, max_bytes: int, max_elements: int) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a safetensors or .npz file (never pickle) and check its arrays."""
    npz = blob[:4] == b"PK\x03\x04"
    if npz:
        sizes = npz_decoded_bytes(blob, loc=LOC)
    else:
        sizes = safetensors_decoded_bytes(blob, loc=LOC, max_header=MAX_HEADER_BYTES)
    known_arrays(sizes)  # from the headers, before a file of 200,000 arrays is decoded
    decoded = sum(sizes.values())
    if decoded > max_bytes:
        raise PayloadTooLarge(
            f"the {'.npz' if npz else 'safetensors'} file's arrays would take {decoded:,} bytes once decoded "
            f"({', '.join(f'{k}: {v:,}' for k, v in sizes.items())}); the limit is "
            f"{max_bytes:,} (GRADSERVE_MAX_DATASET_BYTES)"
        )
    if npz:
        fmt, tensors = "npz", _npz(blob, sizes, max_bytes=max_elements * 8)
    else:
        fmt, tensors = "safetensors", from_safetensors(blob, loc=LOC)
    for prefix in ("", "test_"):
        x, y = tensors.get(prefix + "inputs"), tensors.get(prefix + "targets")
        if (x is None) != (y is None) or (prefix == "" and x is None):
            raise InvalidInput(f"the file needs arrays '{prefix}inputs' and '{prefix}targets' together", LOC)
        if x is None or y is None:
            continue
        if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise InvalidInput(
                f"{prefix}inputs {list(x.shape)} and {prefix}targets {list(y.shape)} need the same "
                "non-zero number of rows (samples)",
                (*LOC, prefix + "inputs"),
            )
    total = sum(t.numel() for t in tensors.values())
    if total > max_elements:
        raise PayloadTooLarge(
            f"the dataset has {total:,} values; the limit is {max_elements:,} (GRADSERVE_MAX_DATASET_ELEMENTS)"
        )
    for name, t in tensors.items():
        if t.dtype not in DTYPE_NAMES or (t.dtype == torch.bool and name.endswith("inputs")):
            raise InvalidInput(f"array '{name}' has dtype {t.dtype}; use float32/64 or integers", (*LOC, name))
    return fmt, tensors


def known_arrays(names: Iterable[str]) -> None:
    unknown = sorted(set(names) - set(ARRAYS))
    if unknown:
        shown = ", ".join(repr(n[:40]) for n in unknown[:5]) + (
            f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
        )
        raise InvalidInput(f"unexpected arrays {shown}; a dataset holds {', '.join(ARRAYS)}", LOC)


def _npz(blob: bytes, sizes: dict[str, int], *, max_bytes: int) -> dict[str, torch.Tensor]:
    """The arrays of an .npz whose headers declared ``sizes`` (bytes once loaded, widened integers'
    included, so never less than their stored data)."""
    try:
        # .npz members may be compressed: a few KB can inflate to many GB, so the sizes the zip
        # directory declares are checked first, and each member is inflated under a cap (the
        # directory may lie) of what its array header declares.
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            members = archive.infolist()
        inflated = sum(info.file_size for info in members)
        if inflated > max_bytes:
            raise PayloadTooLarge(
                f"the .npz file inflates to {inflated:,} bytes; the limit is {max_bytes:,} "
                "(8 bytes per value of GRADSERVE_MAX_DATASET_ELEMENTS)"
            )
        arrays = {}
        for info in members:
            name = info.filename.removesuffix(".npy")
            raw = member_bytes(blob, info, sizes[name] + NPY_HEADER_ROOM, loc=LOC)
            # allow_pickle=False: an object array (the only kind that needs pickle) is refused, not loaded.
            arrays[name] = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(f"not a readable .npz file (object arrays are refused): {exc}", LOC) from exc
    out = {}
    for name, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise InvalidInput(f"array '{name}' has dtype {arr.dtype}; only numbers are accepted", (*LOC, name))
        if arr.dtype.kind == "u" and arr.dtype != np.uint8:
            if arr.size and int(arr.max()) > np.iinfo(np.int64).max:  # astype would wrap it to a negative
                raise InvalidInput(f"array '{name}' holds values above the int64 range", (*LOC, name))
            arr = arr.astype(np.int64)
        if arr.dtype in (np.int8, np.int16):
            arr = arr.astype(np.int32)
        out[name] = torch.from_numpy(np.ascontiguousarray(arr))
    return out
