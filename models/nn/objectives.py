"""Loss, optimizer and scheduler specs (models.spec) -> torch objects. Each spec class names its torch class
(``torch_class``), so the catalogues are the spec modules themselves (never getattr on torch)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn, optim
from torch.optim import lr_scheduler

from models.errors import InvalidInput
from models.spec.types import Spec, torch_kwargs

# Loss keywords that PyTorch wants as tensors but a JSON spec gives as lists.
_TENSOR_KWARGS = ("weight", "pos_weight")
Scheduler = lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau
Loc = tuple[str | int, ...]


def build_loss(spec: Any, device: torch.device | str | None = None, loc: Loc = ("body", "criterion")) -> nn.Module:
    """``nn.MSELoss()`` and friends, with only the keywords the spec sets (so defaults are PyTorch's)."""
    kwargs: dict[str, Any] = torch_kwargs(spec)
    for key in _TENSOR_KWARGS:
        if kwargs.get(key) is not None:
            kwargs[key] = torch.tensor(kwargs[key], dtype=torch.float32, device=device)
    loss: nn.Module = _construct(spec, loc, **kwargs)
    return loss


def build_optimizer(spec: Any, params: Iterable[torch.Tensor], loc: Loc = ("body", "optimizer")) -> optim.Optimizer:
    """``optim.SGD(params, lr=...)`` and friends, with only the keywords the spec sets. Frozen parameters
    (``requires_grad=False``: a pretrained backbone, a LoRA base) are not the optimizer's, as a fine-tuning
    script leaves them out."""
    trainable = [p for p in params if p.requires_grad]
    opt: optim.Optimizer = _construct(spec, loc, trainable, **torch_kwargs(spec))
    return opt


def build_scheduler(
    spec: Any, optimizer: optim.Optimizer, total_steps: int, loc: Loc = ("body", "lr_scheduler")
) -> Scheduler:
    """``lr_scheduler.StepLR(optimizer, ...)`` and friends; OneCycleLR's ``total_steps`` defaults to the job's."""
    kwargs = torch_kwargs(spec)
    if spec.type == "OneCycleLR":
        kwargs.setdefault("total_steps", total_steps)
    sched: Scheduler = _construct(spec, loc, optimizer, **kwargs)
    return sched


def _construct(spec: Spec, loc: Loc, *args: Any, **kwargs: Any) -> Any:
    try:
        return type(spec).torch_class(*args, **kwargs)  # type: ignore[attr-defined]
    except (TypeError, ValueError, KeyError) as exc:  # e.g. SGD nesterov without momentum
        raise InvalidInput(f"{spec.type} cannot be built: {exc}", loc) from exc  # type: ignore[attr-defined]
