"""A session's forward inputs in either network form: one tensor for a catalogue network, tensors by name
for an exported one (``input_ids``, ``attention_mask``), moved, counted and fed to the network alike."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Inputs = torch.Tensor | dict[str, torch.Tensor]


def named(meta: dict[str, Any], x: Inputs) -> Inputs:
    """An exported one-input network's ``input`` under its name; anything else as it came."""
    if meta.get("format") == "export" and isinstance(x, torch.Tensor):
        return {meta["form"]["inputs"][0]["name"]: x}
    return x


def run_net(net: nn.Module, x: Inputs) -> torch.Tensor:
    """``net(x)``, or ``net(**inputs)`` for an exported network's named inputs."""
    out: torch.Tensor = net(**x) if isinstance(x, dict) else net(x)
    return out


def batch_size(x: Inputs) -> int:
    return int(next(iter(x.values())).shape[0]) if isinstance(x, dict) else int(x.shape[0])


def to_device(x: Inputs, device: torch.device) -> Inputs:
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)
