"""Datasets as CPU tensors, shaped for the network the plan names (``models.nn.job_plan``).

Generated data (``random``, ``digits``) is cached per process, so a warm worker starts a job
without regenerating it; tensors from the cache are never modified in place.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from models.data import transforms
from models.data.formats import decode_upload
from models.data.transforms import Pipeline
from models.wire.tensors import DTYPES, from_safetensors
from worker.engine import Data


class DataError(Exception):
    """The data cannot train this network (labels out of range, counts that differ)."""


def materialize(dataset: dict[str, Any], plan: dict[str, Any], blob: bytes | None = None) -> Data:
    """The dataset of a job, inputs in the network's dtype and shape, targets as the loss wants them."""
    x, y, x_val, y_val = SOURCES[dataset["source"]](dataset, plan, blob)
    pipeline = None
    if dataset.get("transforms"):
        pipeline = Pipeline(transforms.parse(dataset["transforms"]), plan["augment_seed"])
        x = pipeline.apply_fixed(x.to(torch.float32))
        x_val = None if x_val is None else pipeline.apply_eval(x_val.to(torch.float32))
    data = Data(_inputs(x, plan), _targets(y, plan), None, None, plan.get("num_classes"))
    if pipeline is not None and pipeline.per_batch:
        data.augment = pipeline.augment
    if x_val is not None and y_val is not None and len(x_val):
        data.x_val, data.y_val = _inputs(x_val, plan), _targets(y_val, plan)
    return data


Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


def _from_random(dataset: dict[str, Any], plan: dict[str, Any], blob: bytes | None) -> Split:
    x, y = _random(
        dataset["seed"],
        plan["num_samples"],
        tuple(plan["input_shape"]),
        plan.get("num_classes"),
        tuple(plan["target_shape"] or ()),
    )
    return x, y, None, None


def _from_digits(dataset: dict[str, Any], plan: dict[str, Any], blob: bytes | None) -> Split:
    x, y, x_val, y_val = _digits(
        dataset["image_size"], dataset["test_fraction"], dataset["split_seed"], dataset.get("normalize", True)
    )
    return x, y, x_val, y_val


def _from_file(dataset: dict[str, Any], plan: dict[str, Any], blob: bytes | None) -> Split:
    """Inline and uploaded data: a safetensors file (inline data's sits in Redis), or an image folder, WebDataset
    shard, table or .npz stored as received or read by reference (``models.store.job_blobs.source_data``),
    decoded by the recipe its upload or registration recorded (the plan's ``decode``)."""
    if blob is None:
        raise DataError(f"the {dataset['source']} dataset's data is gone (expired or deleted)")
    recipe = plan.get("decode")
    tensors = from_safetensors(blob, loc=("dataset",)) if recipe is None else decode_upload(blob, recipe)
    return tensors["inputs"], tensors["targets"], tensors.get("test_inputs"), tensors.get("test_targets")


# One builder per dataset source (models.spec.job.DatasetSpec); models.nn.job_plan.PLANNERS checks each.
SOURCES: dict[str, Callable[[dict[str, Any], dict[str, Any], bytes | None], Split]] = {
    "random": _from_random,
    "digits": _from_digits,
    "inline": _from_file,
    "upload": _from_file,
}


def _inputs(x: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
    shape = (x.shape[0], *plan["input_shape"])
    if x.numel() != x.shape[0] * _prod(plan["input_shape"]):
        raise DataError(f"inputs of shape {list(x.shape)} do not fit the network's input {plan['input_shape']}")
    return x.reshape(shape).to(DTYPES[plan.get("input_dtype", "float32")])


def _targets(y: torch.Tensor, plan: dict[str, Any]) -> torch.Tensor:
    kind = plan["targets"]
    if kind in {"class", "one_hot"}:
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise DataError("class targets must be whole numbers")
        y = y.to(torch.int64)
        classes = plan["num_classes"]
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise DataError(f"class targets must lie in [0, {classes}); found {int(y.min())}..{int(y.max())}")
        if kind == "one_hot":
            return F.one_hot(y.reshape(-1), plan["output_shape"][0]).to(torch.float32)
        return y
    return y.to(torch.float32).reshape((y.shape[0], *plan["output_shape"]))


def _prod(shape: list[int]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


@lru_cache(maxsize=4)
def _random(
    seed: int, n: int, input_shape: tuple[int, ...], num_classes: int | None, target_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *input_shape), generator=g)  # (N, *input_shape)
    if num_classes is not None:
        return x, torch.randint(num_classes, (n,), generator=g)  # (N,)
    return x, torch.randn((n, *target_shape), generator=g)  # (N, *target_shape)


@lru_cache(maxsize=4)
def _digits(
    image_size: int, test_fraction: float, split_seed: int, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)  # (1797, 64) in 0..16, (1797,)
    x = torch.from_numpy(images).to(torch.float32).div_(16.0).reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(labels).to(torch.int64)
    x_val = y_val = None
    if test_fraction > 0:
        train, test = train_test_split(range(len(y)), test_size=test_fraction, random_state=split_seed, stratify=labels)
        train_idx, test_idx = torch.tensor(train), torch.tensor(test)
        x, y, x_val, y_val = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    if normalize:  # statistics of the training split only, so nothing leaks from the held-out one
        mean, std = x.mean(), x.std()
        x = (x - mean) / std
        x_val = None if x_val is None else (x_val - mean) / std
    return x, y, x_val, y_val
