"""Safetensors codecs for live training state: tensor groups with JSON metadata, optimizer state, RNG state.
Never pickle.

Each function round-trips bit for bit: an optimizer reloaded from ``optimizer_to_bytes`` takes the
same next step as the one that was saved.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from torch import nn, optim

from models.wire.tensors import from_safetensors, safetensors_metadata, to_safetensors

_META = "gradserve"  # the one __metadata__ key we use: a JSON document


def pack(tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> bytes:
    return to_safetensors(tensors, {_META: json.dumps(meta or {})})


def unpack(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = from_safetensors(blob)
    raw = safetensors_metadata(blob).get(_META)
    return tensors, (json.loads(raw) if raw else {})


# --- modules ------------------------------------------------------------------------------------------------------


def split_state(net: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``state_dict()`` split into parameters and buffers (running stats and counters)."""
    state = net.state_dict()
    params = {name for name, _ in net.named_parameters()}
    return ({k: v for k, v in state.items() if k in params}, {k: v for k, v in state.items() if k not in params})


def grads(net: nn.Module) -> dict[str, torch.Tensor]:
    """The gradients that exist; a parameter whose ``grad`` is None is absent."""
    return {name: p.grad for name, p in net.named_parameters() if p.grad is not None}


def set_grads(net: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for name, p in net.named_parameters():
        g = tensors.get(name)
        p.grad = None if g is None else g.to(p.device)


# --- optimizers ---------------------------------------------------------------------------------------------------


def optimizer_to_bytes(opt: optim.Optimizer) -> bytes:
    """``state_dict()``: tensors as ``state.{param index}.{key}``; everything else as JSON metadata."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = _json_value(value)
    groups = [{k: _json_value(v) for k, v in group.items()} for group in sd["param_groups"]]
    return pack(tensors, {"param_groups": groups, "plain": plain})


def load_optimizer(opt: optim.Optimizer, blob: bytes) -> None:
    """Restore into an optimizer freshly built over the same parameters (same order)."""
    tensors, meta = unpack(blob)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("plain", {}).items():
        state.setdefault(int(index), {}).update(entry)
    fresh = opt.state_dict()["param_groups"]
    groups = [_retuple(saved, like) for saved, like in zip(meta["param_groups"], fresh, strict=True)]
    opt.load_state_dict({"state": state, "param_groups": groups})


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": str(value)}
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, torch.Tensor):  # a tensor hyper-parameter (rare): keep its value
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def _retuple(saved: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """JSON has no tuples; give back the fresh optimizer's tuple-ness (``betas``) and non-finite floats."""
    out = {}
    for key, value in saved.items():
        if isinstance(value, dict) and set(value) == {"float"}:
            value = float(value["float"])
        elif isinstance(value, list) and isinstance(like.get(key), tuple):
            value = tuple(value)
        out[key] = value
    return out


# --- RNG ----------------------------------------------------------------------------------------------------------


def rng_state(device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return out


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))


def same_rng(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
