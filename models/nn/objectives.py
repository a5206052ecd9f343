"""Loss and optimizer specs (models.spec) -> torch objects, through closed catalogues (never getattr on torch)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn, optim

from models.errors import InvalidInput
from models.spec.types import torch_kwargs

LOSSES: dict[str, type[nn.Module]] = {
    "MSELoss": nn.MSELoss,
    "L1Loss": nn.L1Loss,
    "SmoothL1Loss": nn.SmoothL1Loss,
    "HuberLoss": nn.HuberLoss,
    "CrossEntropyLoss": nn.CrossEntropyLoss,
    "NLLLoss": nn.NLLLoss,
    "BCELoss": nn.BCELoss,
    "BCEWithLogitsLoss": nn.BCEWithLogitsLoss,
    "KLDivLoss": nn.KLDivLoss,
    "SoftMarginLoss": nn.SoftMarginLoss,
    "PoissonNLLLoss": nn.PoissonNLLLoss,
}

OPTIMIZERS: dict[str, type[optim.Optimizer]] = {
    "SGD": optim.SGD,
    "Adam": optim.Adam,
    "AdamW": optim.AdamW,
    "Adamax": optim.Adamax,
    "NAdam": optim.NAdam,
    "RAdam": optim.RAdam,
    "RMSprop": optim.RMSprop,
    "Adagrad": optim.Adagrad,
    "Adadelta": optim.Adadelta,
}

# Loss keywords that PyTorch wants as tensors but a JSON spec gives as lists.
_TENSOR_KWARGS = ("weight", "pos_weight")


def build_loss(spec: Any, device: torch.device | str | None = None, loc: tuple = ("body", "criterion")) -> nn.Module:
    """``nn.MSELoss()`` and friends, with only the keywords the spec sets (so defaults are PyTorch's)."""
    kwargs: dict[str, Any] = torch_kwargs(spec)
    for key in _TENSOR_KWARGS:
        if kwargs.get(key) is not None:
            kwargs[key] = torch.tensor(kwargs[key], dtype=torch.float32, device=device)
    try:
        return LOSSES[spec.type](**kwargs)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{spec.type} cannot be built: {exc}", loc) from exc


def build_optimizer(spec: Any, params: Iterable[torch.Tensor], loc: tuple = ("body", "optimizer")) -> optim.Optimizer:
    """``optim.SGD(params, lr=...)`` and friends, with only the keywords the spec sets."""
    kwargs: dict[str, Any] = torch_kwargs(spec)
    try:
        return OPTIMIZERS[spec.type](params, **kwargs)
    except (TypeError, ValueError) as exc:  # e.g. SGD nesterov without momentum
        raise InvalidInput(f"{spec.type} cannot be built: {exc}", loc) from exc
