"""Dataset formats that are stored as the user sent them and decoded where a job loads its data.

The upload is checked here in full (every image decoded, every column read), so a job never fails on
data that was accepted; what the check learns (shape, classes, the columns used) is recorded with the
dataset as its ``decode`` recipe, which the job's plan carries to the worker.
"""

from __future__ import annotations

from typing import Any

import torch

from models.data import image_folder, table
from models.data.archive import Archive
from models.data.arrays import parse_arrays
from models.errors import InvalidInput, Loc
from models.wire.tensors import describe_array

# Content-Type -> (format, archive): the formats stored as received (npz and safetensors are not).
CONTENT_TYPES: dict[str, tuple[str, Archive | None]] = {
    "application/x-tar": ("image_folder", "tar"),
    "application/zip": ("image_folder", "zip"),
    "application/vnd.apache.parquet": ("parquet", None),
}
LOC: Loc = ("body",)
UNCAPPED = 2**62


def inspect_upload(
    blob: bytes,
    content_type: str,
    *,
    label: str,
    features: list[str] | None,
    max_bytes: int,
    max_elements: int,
) -> dict[str, Any]:
    """The dataset's description (``format``, ``shape``, ``classes``, ``num_samples``, ``arrays``, and the
    ``decode`` recipe); a 4xx naming the member or column at fault."""
    fmt, archive = CONTENT_TYPES[content_type]
    if fmt == "image_folder":
        assert archive is not None
        folder = image_folder.read_folder(blob, archive, max_bytes=max_bytes, loc=LOC)
        h, w = image_folder.image_size(folder, max_elements=max_elements, loc=LOC)
        image_folder.decode_pixels(folder, (h, w), loc=LOC)  # every image, so a corrupt one is refused now
        y = image_folder.labels(folder)
        n = len(folder.samples)
        recipe: dict[str, Any] = {"format": fmt, "archive": archive, "size": [h, w]}
        return {
            "format": "webdataset" if folder.webdataset else fmt,
            "archive": archive,
            "shape": [3, h, w],
            "classes": folder.classes,
            "num_samples": n,
            "arrays": {"inputs": {"shape": [n, 3, h, w], "dtype": "float32"}, "targets": describe_array(y)},
            "decode": recipe,
        }
    found, x, y = table.inspect_table(blob, label=label, features=features, max_elements=max_elements, loc=LOC)
    return {
        "format": fmt,
        "shape": [x.shape[1]],
        "classes": found.classes,
        "label": found.label,
        "features": found.features,
        "num_samples": int(x.shape[0]),
        "arrays": {"inputs": describe_array(x), "targets": describe_array(y)},
        "decode": {"format": fmt, **found.doc()},
    }


def decode_upload(blob: bytes, recipe: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``{"inputs", "targets"}`` of a dataset stored as received, by the recipe its upload recorded."""
    loc: Loc = ("dataset",)
    if recipe["format"] == "image_folder":
        # The stored bytes are the ones checked at upload, caps included.
        folder = image_folder.read_folder(blob, recipe["archive"], max_bytes=UNCAPPED, loc=loc)
        h, w = recipe["size"]
        pixels = image_folder.decode_pixels(folder, (h, w), loc=loc)  # (N, 3, H, W) uint8
        return {"inputs": image_folder.to_tensor(pixels), "targets": image_folder.labels(folder)}
    if recipe["format"] == "parquet":
        found = table.TableRecipe(recipe["label"], recipe["features"], recipe["classes"])
        x, y = table.decode_table(blob, found, loc=loc)
        return {"inputs": x, "targets": y}
    if recipe["format"] == "npz":  # streamed as received; every check is repeated on the whole arrays
        _, tensors = parse_arrays(blob, max_bytes=UNCAPPED, max_elements=UNCAPPED)
        return tensors
    raise InvalidInput(f"unknown stored dataset format {recipe['format']!r}", loc)
