"""Check a job request against its network and the limits, and work out what the worker needs.

Runs in the API before anything is queued, so a job that cannot run is a 422 naming the field,
never a failed job. The plan it returns (total steps, sample shapes, how targets are encoded) is
stored with the job and read by the worker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from pydantic import TypeAdapter

from models.data.transforms import transformed_arrays
from models.errors import InvalidInput, Loc, first_line
from models.nn.build import NetworkSummary, check_activation_memory, check_indices
from models.nn.job_network import PlanNetwork
from models.nn.objectives import build_loss, build_optimizer, build_scheduler
from models.settings import Settings
from models.spec.job import DigitsDataset, JobCreate, RandomDataset
from models.spec.losses import CLASS_INDEX_LOSSES, LossSpec

DIGITS_SAMPLES, DIGITS_CLASSES = 1797, 10
B: Loc = ("body",)
DS: Loc = (*B, "dataset")


def plan_job(
    req: JobCreate,
    net: PlanNetwork,
    summary: NetworkSummary,
    settings: Settings,
    arrays: dict[str, dict[str, Any]] | None = None,
    arrays_loc: Loc = DS,
) -> dict[str, Any]:
    """The plan of a valid job, or ``InvalidInput``. ``arrays``: shapes and dtypes of inline/uploaded data,
    whose errors point at ``arrays_loc`` (the request's dataset, or its upload id)."""
    if req.batch_size > settings.max_batch_size:
        raise InvalidInput(
            f"batch_size {req.batch_size} exceeds the limit of {settings.max_batch_size} (GRADSERVE_MAX_BATCH_SIZE)",
            (*B, "batch_size"),
        )
    if req.criterion.reduction == "none":
        raise InvalidInput("a job needs a scalar loss: use reduction 'mean' or 'sum'", (*B, "criterion", "reduction"))
    check_activation_memory(summary.activation_bytes_per_sample, req.batch_size, settings, (*B, "batch_size"))
    class_loss = req.criterion.type in CLASS_INDEX_LOSSES
    out_shape = list(summary.output_shape)
    plan: dict[str, Any] = {
        "input_shape": list(net.input_shape),
        "input_dtype": net.input_dtype,
        "output_shape": out_shape,
        "num_classes": None,
        "target_shape": None,
    }
    ctx = _Ctx(net, out_shape, class_loss, plan, settings, arrays, arrays_loc)
    n, val = PLANNERS[req.dataset.source](req.dataset, ctx)
    if getattr(req.dataset, "transforms", None):
        plan["augment_seed"] = req.seed  # random crops and flips, drawn per batch (models.data.transforms)
    # An optimizer step takes accumulate_grad_batches batches, and an epoch's last step what is left.
    steps_per_epoch = math.ceil(math.ceil(n / req.batch_size) / req.accumulate_grad_batches)
    epochs = req.epochs if req.epochs is not None else 0  # the request's validator gave one of the two
    total = req.steps if req.steps is not None else epochs * steps_per_epoch
    if total > settings.max_steps:
        field = "steps" if req.steps is not None else "epochs"
        raise InvalidInput(
            f"the job would run {total:,} steps; the limit is {settings.max_steps:,} (GRADSERVE_MAX_STEPS)", (*B, field)
        )
    _check_captures(req, total, summary, settings)
    _check_scheduler(req, total, val)
    _probe_loss(req, plan)
    plan.update(
        num_samples=n,
        num_val=val,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        classification=class_loss,
        num_elements=summary.num_elements,
    )
    return plan


@dataclass(frozen=True)
class _Ctx:
    """What every dataset source's planner may need besides its own spec."""

    net: PlanNetwork
    out_shape: list[int]
    class_loss: bool
    plan: dict[str, Any]
    settings: Settings
    arrays: dict[str, dict[str, Any]] | None
    arrays_loc: Loc


def _plan_random(ds: RandomDataset, c: _Ctx) -> tuple[int, int]:
    return _random(ds, c.net, c.out_shape, c.class_loss, c.plan, c.settings), 0


def _plan_digits(ds: DigitsDataset, c: _Ctx) -> tuple[int, int]:
    return _digits(ds, c.net, c.out_shape, c.class_loss, c.plan)


def _plan_arrays(ds: Any, c: _Ctx) -> tuple[int, int]:
    if c.arrays is None:
        raise InvalidInput(f"the {ds.source} dataset's arrays are missing", c.arrays_loc)
    arrays = c.arrays
    if getattr(ds, "transforms", None):  # the network takes the samples as the transforms leave them
        arrays = transformed_arrays(arrays, ds.transforms, (*DS, "transforms"))
    return _arrays(arrays, c.arrays_loc, c.net, c.out_shape, c.class_loss, c.plan, c.settings)


# One planner per dataset source (models.spec.job.DatasetSpec); worker.datasets.SOURCES builds the data.
PLANNERS: dict[str, Callable[[Any, _Ctx], tuple[int, int]]] = {
    "random": _plan_random,
    "digits": _plan_digits,
    "inline": _plan_arrays,
    "upload": _plan_arrays,
}


def _random(
    ds: RandomDataset,
    net: PlanNetwork,
    out_shape: list[int],
    class_loss: bool,
    plan: dict[str, Any],
    settings: Settings,
) -> int:
    if ds.input_shape is not None and list(ds.input_shape) != list(net.input_shape):
        raise InvalidInput(
            f"dataset input_shape {ds.input_shape} does not match the network's input_shape {list(net.input_shape)}",
            (*DS, "input_shape"),
        )
    if class_loss and ds.target_shape is not None:
        raise InvalidInput(
            "this loss takes class indices: give num_classes instead of target_shape", (*DS, "target_shape")
        )
    if ds.num_classes is not None or class_loss:
        classes = ds.num_classes or (out_shape[0] if out_shape else 1)
        _classes_fit(classes, out_shape, class_loss, plan, (*DS, "num_classes"))
    else:
        target = list(ds.target_shape or out_shape)
        if target != out_shape:
            raise InvalidInput(
                f"target_shape {target} does not match the network's output shape {out_shape}", (*DS, "target_shape")
            )
        plan.update(targets="values", target_shape=target)
    per_sample = math.prod(net.input_shape) + (math.prod(plan["target_shape"]) if plan["target_shape"] else 1)
    if ds.num_samples * per_sample > settings.max_dataset_elements:
        raise InvalidInput(
            f"{ds.num_samples:,} samples of {per_sample:,} values exceed the limit of "
            f"{settings.max_dataset_elements:,} (GRADSERVE_MAX_DATASET_ELEMENTS)",
            (*DS, "num_samples"),
        )
    return ds.num_samples


def _digits(
    ds: DigitsDataset, net: PlanNetwork, out_shape: list[int], class_loss: bool, plan: dict[str, Any]
) -> tuple[int, int]:
    pixels = ds.image_size**2
    if math.prod(net.input_shape) != pixels:
        hint = " (use image_size 32 for LeNet)" if math.prod(net.input_shape) == 1024 else ""
        raise InvalidInput(
            f"digits at image_size {ds.image_size} give {pixels} values per sample, but the "
            f"network's input_shape {list(net.input_shape)} takes {math.prod(net.input_shape)}{hint}",
            (*DS, "image_size"),
        )
    _classes_fit(DIGITS_CLASSES, out_shape, class_loss, plan, DS)
    test = math.ceil(DIGITS_SAMPLES * ds.test_fraction) if ds.test_fraction > 0 else 0
    return DIGITS_SAMPLES - test, test


def _classes_fit(classes: int, out_shape: list[int], class_loss: bool, plan: dict[str, Any], loc: Loc) -> None:
    """Class labels train a network whose output is one score per class (one-hot for non-class losses)."""
    if len(out_shape) != 1 or out_shape[0] < classes:
        raise InvalidInput(
            f"{classes} classes need a network output of shape [C] with C >= {classes}; "
            f"this network outputs {out_shape}",
            loc,
        )
    plan.update(
        targets="class" if class_loss else "one_hot",
        num_classes=classes,
        target_shape=None if class_loss else list(out_shape),
    )


def _arrays(
    arrays: dict[str, dict[str, Any]],
    loc: Loc,
    net: PlanNetwork,
    out_shape: list[int],
    class_loss: bool,
    plan: dict[str, Any],
    settings: Settings,
) -> tuple[int, int]:
    """``arrays``: ``{"inputs": {"shape", "dtype"}, "targets": ..., "test_inputs"?, "test_targets"?}``."""

    def field(name: str) -> Loc:
        return (*loc, name) if loc == DS else loc

    total, counts = 0, {}
    for prefix in ("", "test_"):
        xs, ys = arrays.get(prefix + "inputs"), arrays.get(prefix + "targets")
        if xs is None and ys is None:
            continue
        if xs is None or ys is None:
            raise InvalidInput(f"{prefix}inputs and {prefix}targets go together", loc)
        x_shape, y_shape = list(xs["shape"]), list(ys["shape"])
        if x_shape[1:] != list(net.input_shape) or not x_shape:
            raise InvalidInput(
                f"{prefix}inputs have shape {x_shape}; the network takes [N, {', '.join(map(str, net.input_shape))}]",
                field(prefix + "inputs"),
            )
        if not y_shape or y_shape[0] != x_shape[0]:
            raise InvalidInput(
                f"{prefix}targets have shape {y_shape}; they need one per input ({x_shape[0]})",
                field(prefix + "targets"),
            )
        labels = len(y_shape) == 1 and (
            class_loss or ("int" in ys["dtype"] and len(out_shape) == 1 and out_shape[0] > 1)
        )
        if class_loss and not labels:
            raise InvalidInput(
                f"{prefix}targets have shape {y_shape}, but this loss takes one class index per sample (shape [N])",
                field(prefix + "targets"),
            )
        if labels:
            _classes_fit(
                out_shape[0] if len(out_shape) == 1 else 0, out_shape, class_loss, plan, field(prefix + "targets")
            )
            _labels_fit(ys, plan["num_classes"], field(prefix + "targets"), prefix)
        elif y_shape[1:] != out_shape:
            raise InvalidInput(
                f"{prefix}targets have shape {y_shape}; the network outputs [N, {', '.join(map(str, out_shape))}]",
                field(prefix + "targets"),
            )
        else:
            plan.update(targets="values", target_shape=out_shape)
        if "min" in xs and net.input_dtype == "int64":
            check_indices(net.index_layers(), xs["min"], xs["max"], field(prefix + "inputs"), f"{prefix}inputs")
        counts[prefix] = x_shape[0]
        total += math.prod(x_shape) + math.prod(y_shape)
    if not counts.get(""):
        raise InvalidInput("the dataset has no samples", loc)
    if total > settings.max_dataset_elements:
        raise InvalidInput(
            f"the dataset has {total:,} values; the limit is {settings.max_dataset_elements:,} "
            "(GRADSERVE_MAX_DATASET_ELEMENTS)",
            loc,
        )
    return counts[""], counts.get("test_", 0)


def _labels_fit(ys: dict[str, Any], classes: int, loc: Loc, prefix: str) -> None:
    """Refuse labels that are not class indices now, rather than fail the job on its worker.
    (Arrays described before value statistics were recorded carry none; the worker still checks them.)"""
    if ys.get("integral") is False:
        raise InvalidInput(f"{prefix}targets are class indices and must be whole numbers", loc)
    if "min" in ys and (ys["min"] < 0 or ys["max"] >= classes):
        raise InvalidInput(
            f"{prefix}targets are class indices and must lie in [0, {classes}) for this network's "
            f"{classes} outputs; found {ys['min']}..{ys['max']}",
            loc,
        )


def _check_captures(req: JobCreate, total: int, summary: NetworkSummary, settings: Settings) -> None:
    k = req.capture.gradients_every
    if not k:
        return
    loc = (*B, "capture", "gradients_every")
    snapshots = total // k
    if snapshots > settings.max_gradient_snapshots:
        least = math.ceil(total / settings.max_gradient_snapshots)
        raise InvalidInput(
            f"every {k} steps of {total:,} makes {snapshots:,} gradient snapshots; the limit is "
            f"{settings.max_gradient_snapshots} (GRADSERVE_MAX_GRADIENT_SNAPSHOTS): use at least "
            f"{least}",
            loc,
        )
    size = snapshots * summary.num_elements * 4
    if size > settings.max_capture_bytes:
        raise InvalidInput(
            f"the gradient snapshots would take {size / 2**20:,.1f} MiB; the limit is "
            f"{settings.max_capture_bytes / 2**20:,.1f} MiB (GRADSERVE_MAX_CAPTURE_BYTES)",
            loc,
        )


def _check_scheduler(req: JobCreate, total: int, num_val: int) -> None:
    spec = req.lr_scheduler
    if spec is None:
        return
    loc = (*B, "lr_scheduler")
    if spec.type == "ReduceLROnPlateau" and num_val == 0:
        raise InvalidInput(
            "ReduceLROnPlateau steps on the held-out loss, and this dataset has no held-out split "
            "(use digits with test_fraction > 0, or upload test_inputs and test_targets)",
            loc,
        )
    if spec.type == "OneCycleLR" and spec.total_steps is not None and spec.total_steps < total:
        raise InvalidInput(
            f"OneCycleLR total_steps {spec.total_steps} is below the job's {total} steps "
            "(leave it out to use the job's)",
            (*loc, "total_steps"),
        )
    # PyTorch's own checks (e.g. cycle_momentum with an optimizer that has no momentum), on a dummy parameter.
    build_scheduler(spec, build_optimizer(req.optimizer, [torch.zeros(1, requires_grad=True)]), total, loc)


def _probe_loss(req: JobCreate, plan: dict[str, Any]) -> None:
    """Run the loss on a batch of two zero outputs and targets: PyTorch's own rules decide what fits."""
    problem = _loss_problem(
        req.criterion.model_dump_json(), tuple(plan["output_shape"]), plan["targets"], tuple(plan["target_shape"] or ())
    )
    if problem:
        raise InvalidInput(
            f"{req.criterion.type} does not fit this network's output {plan['output_shape']} and targets: {problem}",
            (*B, "criterion"),
        )


@lru_cache(maxsize=256)
def _loss_problem(
    criterion_json: str, output_shape: tuple[int, ...], targets: str, target_shape: tuple[int, ...]
) -> str | None:
    out = torch.zeros((2, *output_shape))
    target = torch.zeros((2,), dtype=torch.int64) if targets == "class" else torch.zeros((2, *target_shape))
    loss = build_loss(TypeAdapter(LossSpec).validate_json(criterion_json))
    try:
        with torch.no_grad():
            loss(out, target)
    except (RuntimeError, ValueError, IndexError) as exc:
        return first_line(exc)
    return None
