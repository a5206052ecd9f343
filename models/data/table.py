"""A Parquet table as a dataset: a label column, and numeric feature columns stacked in their order.

The label decides the task: integers (or booleans) are class indices, strings are class names (indexed
by their sorted order, as ImageFolder indexes folders), floats are values to regress, shaped (N, 1).
Features are float32, (N, F): every numeric column but the label, in the table's order, unless the
upload names them (``?features=a,b``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.errors import InvalidInput, Loc, PayloadTooLarge

# The upload's query parameters that chose the columns: where their errors point.
LABEL: Loc = ("query", "label")
FEATURES: Loc = ("query", "features")


@dataclass(frozen=True)
class TableRecipe:
    """How to read the table again, recorded at upload so every job decodes it the same way."""

    label: str
    features: list[str]
    classes: list[str] | None  # for a string label: class index -> name

    def doc(self) -> dict[str, Any]:
        return {"label": self.label, "features": self.features, "classes": self.classes}


def inspect_table(
    blob: bytes, *, label: str, features: list[str] | None, max_elements: int, loc: Loc
) -> tuple[TableRecipe, torch.Tensor, torch.Tensor]:
    """The table's recipe and its decoded (inputs, targets); a 422 naming the column at fault."""
    pf = _open(blob, loc)
    schema = pf.schema_arrow
    names = list(schema.names)
    if label not in names:
        raise InvalidInput(
            f"the label column '{label}' is not in the table; its columns are {', '.join(names)} "
            "(name the label with ?label=COLUMN)",
            LABEL,
        )
    if features is None:
        features = [n for n in names if n != label and _numeric(schema.field(n).type)]
    if not features:
        raise InvalidInput(f"the table has no numeric feature column besides the label '{label}'", FEATURES)
    for name in features:
        if name not in names:
            raise InvalidInput(
                f"feature column '{name}' is not in the table; its columns are {', '.join(names)}", FEATURES
            )
        if not _numeric(schema.field(name).type):
            raise InvalidInput(
                f"feature column '{name}' has type {schema.field(name).type}; features must be numeric "
                "(integers, floats or booleans)",
                FEATURES,
            )
        if name == label:
            raise InvalidInput(f"column '{name}' is the label; it cannot be a feature too", FEATURES)
    rows = pf.metadata.num_rows
    if rows == 0:
        raise InvalidInput("the table has no rows", loc)
    total = rows * (len(features) + 1)
    if total > max_elements:
        raise PayloadTooLarge(
            f"{rows:,} rows of {len(features) + 1} columns are {total:,} values; the limit is {max_elements:,} "
            "(GRADSERVE_MAX_DATASET_ELEMENTS)",
            loc,
        )
    # What the footer declares the columns inflate to, before any page is decompressed.
    declared = sum(
        rg.column(j).total_uncompressed_size
        for rg in (pf.metadata.row_group(i) for i in range(pf.metadata.num_row_groups))
        for j in range(rg.num_columns)
        if rg.column(j).path_in_schema in {label, *features}
    )
    if declared > max_elements * 8:
        raise PayloadTooLarge(
            f"the label and feature columns inflate to {declared:,} bytes; the limit is {max_elements * 8:,} "
            "(8 bytes per value of GRADSERVE_MAX_DATASET_ELEMENTS)",
            loc,
        )
    kind = schema.field(label).type
    classes: list[str] | None = None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        classes = sorted(set(_column(pf, label, loc).to_pylist()))
    elif not _numeric(kind):
        raise InvalidInput(
            f"the label column '{label}' has type {kind}; labels are integers or strings (classes) or floats (values)",
            LABEL,
        )
    recipe = TableRecipe(label, features, classes)
    x, y = decode_table(blob, recipe, loc=loc)
    return recipe, x, y


def decode_table(blob: bytes, recipe: TableRecipe, *, loc: Loc) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (N, F) float32, targets): int64 (N,) class indices, or float32 (N, 1) values."""
    pf = _open(blob, loc)
    x = np.stack([_column(pf, n, loc).to_numpy().astype(np.float32) for n in recipe.features], axis=1)  # (N, F)
    col = _column(pf, recipe.label, loc)
    if recipe.classes is not None:
        index = {c: i for i, c in enumerate(recipe.classes)}
        y = torch.tensor([index[v] for v in col.to_pylist()], dtype=torch.int64)  # (N,)
    elif pa.types.is_floating(col.type):
        y = torch.from_numpy(col.to_numpy().astype(np.float32)).reshape(-1, 1)  # (N, 1)
    else:
        y = torch.from_numpy(col.to_numpy().astype(np.int64))  # (N,)
    return torch.from_numpy(x), y


def _open(blob: bytes, loc: Loc) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(pa.BufferReader(blob))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"not a readable Parquet file: {exc}", loc) from exc


def _column(pf: pq.ParquetFile, name: str, loc: Loc) -> pa.ChunkedArray:
    try:
        col = pf.read(columns=[name]).column(0)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"column '{name}' cannot be read: {exc}", loc) from exc
    if col.null_count:
        first = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
        raise InvalidInput(f"column '{name}' has {col.null_count:,} empty values (the first at row {first})", loc)
    return col


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind))
