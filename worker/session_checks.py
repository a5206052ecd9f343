"""What a session call refuses before PyTorch sees it, with errors that name the shapes and the fix."""

from __future__ import annotations

from typing import Any

import torch

from models.errors import InvalidInput
from models.nn.build import check_activation_memory, check_indices
from models.nn.shapes import fmt_shape
from models.settings import Settings
from models.spec.losses import CLASS_INDEX_LOSSES
from models.wire.tensors import dtype_name
from worker.session_inputs import Inputs, named


def check_input(meta: dict[str, Any], x: Inputs, settings: Settings) -> None:
    """torch.nn takes mini-batches: ``[N, *input_shape]``, with a readable error for the usual mistakes."""
    if meta.get("format") == "export":
        declared = meta["form"]["inputs"]
        if not isinstance(x, dict) and len(declared) != 1:
            names = ", ".join(i["name"] for i in declared)
            raise InvalidInput(
                f'this network takes {len(declared)} inputs ({names}): send them as "inputs"', ("body", "input")
            )
        check_named_inputs(meta, named(meta, x), settings)
        return
    if isinstance(x, dict):
        raise InvalidInput('this network takes one tensor: send "input", not "inputs"', ("body", "inputs"))
    want, got = list(meta["input_shape"]), list(x.shape)
    expected, loc = f"[N, {', '.join(map(str, want))}]", ("body", "input")
    shapes = {"expected": expected, "received": fmt_shape(got)}
    if got == want:
        raise InvalidInput(
            f"torch.nn only supports mini-batches: the network takes input shaped {expected} and received a "
            f"single sample {fmt_shape(got)}. Add a fake batch dimension with input.unsqueeze(0) (send shape "
            f"[1, {', '.join(map(str, want))}])",
            loc,
            **shapes,
        )
    if got[1:] != want or len(got) != len(want) + 1:
        raise InvalidInput(
            f"the network takes input shaped {expected} (a mini-batch of {fmt_shape(want)} samples) "
            f"but received {fmt_shape(got)}",
            loc,
            **shapes,
        )
    if got[0] < 1 or got[0] > settings.max_batch_size:
        raise InvalidInput(
            f"batch size {got[0]} is outside 1..{settings.max_batch_size} (GRADSERVE_MAX_BATCH_SIZE)", loc
        )
    if dtype_name(x) != meta["input_dtype"]:
        raise InvalidInput(
            f"the network takes {meta['input_dtype']} input but received {dtype_name(x)}; send "
            f'{{"data": [...], "dtype": "{meta["input_dtype"]}"}} to say the dtype',
            loc,
        )
    check_activation_memory(meta["activation_bytes_per_sample"], got[0], settings, loc)
    if not x.is_floating_point() and x.numel():
        check_indices(meta["spec"]["layers"], int(x.min()), int(x.max()), loc)


def check_class_targets(spec: Any, output: torch.Tensor, target: torch.Tensor) -> None:
    """Class indices outside ``[0, C)`` (other than ``ignore_index``): PyTorch's CPU message names one
    bad target, and on a GPU the same mistake is a device-side assert that kills the worker's CUDA context."""
    if spec.type not in CLASS_INDEX_LOSSES or not target.numel() or output.dim() == 0:
        return
    if target.is_floating_point():
        # Probabilities shaped like the output are valid for CrossEntropyLoss; one float per sample is
        # almost always class labels sent as floats ([3.0, 1.0]), which PyTorch answers with a dtype error.
        if output.dim() > 1 and list(target.shape) == list(output.shape[:1]) + list(output.shape[2:]):
            raise InvalidInput(
                f"{spec.type} takes class indices as integers, but the target is {dtype_name(target)} "
                f"{fmt_shape(target.shape)}; send whole numbers (e.g. [3, 1]) or "
                '{"data": [...], "dtype": "int64"}',
                ("body", "target"),
            )
        return
    classes = output.shape[1] if output.dim() > 1 else output.shape[0]
    bad = ((target < 0) | (target >= classes)) & (target != spec.ignore_index)
    if bool(bad.any()):
        wrong = target[bad]
        raise InvalidInput(
            f"{spec.type} takes class indices in [0, {classes}) for an output of {classes} classes "
            f"(or ignore_index={spec.ignore_index}); the target holds out-of-range indices "
            f"(smallest {int(wrong.min())}, largest {int(wrong.max())})",
            ("body", "target"),
        )


def check_named_inputs(meta: dict[str, Any], inputs: Inputs, settings: Settings) -> None:
    """An exported network's inputs: each by name, a mini-batch of the declared per-sample shape and dtype,
    one batch size across them."""
    assert isinstance(inputs, dict), "session_inputs.named gave the one input its name"
    want = {i["name"]: i for i in meta["form"]["inputs"]}
    for name in inputs:
        if name not in want:
            raise InvalidInput(
                f"unknown input '{name}'; the network takes: {', '.join(want)}", ("body", "inputs", name)
            )
    batch = None
    for name, spec in want.items():
        loc = ("body", "inputs", name)
        t = inputs.get(name)
        if t is None:
            raise InvalidInput(f"input '{name}' is missing; the network takes: {', '.join(want)}", loc)
        shape = ["N", *(d if d is not None else "*" for d in spec["shape"])]
        expected = f"[{', '.join(map(str, shape))}]"
        if t.dim() == len(spec["shape"]) and all(
            d is None or d == g for d, g in zip(spec["shape"], t.shape, strict=True)
        ):
            raise InvalidInput(
                f"torch.nn only supports mini-batches: input '{name}' is shaped {expected} and received a single "
                f"sample {fmt_shape(t.shape)}. Add a batch dimension with .unsqueeze(0)",
                loc,
            )
        if t.dim() != len(spec["shape"]) + 1 or any(
            d is not None and d != g for d, g in zip(spec["shape"], t.shape[1:], strict=True)
        ):
            raise InvalidInput(
                f"input '{name}' is shaped {expected} but received {fmt_shape(t.shape)}",
                loc,
                expected=expected,
                received=fmt_shape(t.shape),
            )
        if dtype_name(t) != spec["dtype"]:
            raise InvalidInput(f"input '{name}' is {spec['dtype']} but received {dtype_name(t)}", loc)
        if batch is not None and t.shape[0] != batch:
            raise InvalidInput(f"input '{name}' has a batch of {t.shape[0]}, the others {batch}", loc)
        batch = int(t.shape[0])
        if not 1 <= batch <= settings.max_batch_size:
            raise InvalidInput(
                f"batch size {batch} is outside 1..{settings.max_batch_size} (GRADSERVE_MAX_BATCH_SIZE)", loc
            )
    assert batch is not None
    # The estimate was taken at the example's sizes; a longer sequence costs more, up to its square (attention).
    grow = 1.0
    for name, spec in want.items():
        for size, example, got in zip(spec["shape"], spec["example"], inputs[name].shape[1:], strict=False):
            if size is None:
                grow *= max(1.0, got / example)
    fixed = meta["form"].get("batch")
    if fixed is not None and batch != fixed:
        raise InvalidInput(
            f"this network was exported at a fixed batch of {fixed} (its forward takes **kwargs, which torch.export "
            f"cannot make dynamic); received a batch of {batch}",
            ("body", "inputs"),
        )
    per_sample = int(meta["activation_bytes_per_sample"] * grow**2)
    check_activation_memory(per_sample, batch, settings, ("body", "inputs"))
