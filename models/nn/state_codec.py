"""The one codec of live training state (weights, grads, optimizer, scheduler, RNG, data order) as
safetensors with JSON metadata, used by sessions, job checkpoints and the engine; also single tensors
small enough to ride in a task's JSON arguments. Never pickle.

Each function round-trips bit for bit: an optimizer (or scheduler) reloaded from what it saved takes
the same next step as the one that was saved, and a ``TrainState`` resumes a run exactly.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
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


def optimizer_parts(sd: dict[str, Any], prefix: str = "state.") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer ``state_dict()``: tensors as ``{prefix}{param index}.{key}``, everything else as JSON."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = _json_value(value)
    groups = [{k: _json_value(v) for k, v in group.items()} for group in sd["param_groups"]]
    return tensors, {"param_groups": groups, "plain": plain}


def optimizer_from_parts(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "state."
) -> dict[str, Any]:
    """The ``state_dict()`` that ``optimizer_parts`` split (groups still in JSON form: see ``load_optimizer_state``)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            index, _, key = name[len(prefix) :].partition(".")
            state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("plain", {}).items():
        state.setdefault(int(index), {}).update({k: _from_json(v) for k, v in entry.items()})
    return {"state": state, "param_groups": meta["param_groups"]}


def load_optimizer_state(opt: optim.Optimizer, sd: dict[str, Any]) -> None:
    """Restore into an optimizer freshly built over the same parameters (same order)."""
    fresh = opt.state_dict()["param_groups"]
    groups = [_retuple(saved, like) for saved, like in zip(sd["param_groups"], fresh, strict=True)]
    opt.load_state_dict({"state": sd["state"], "param_groups": groups})


def optimizer_to_bytes(opt: optim.Optimizer) -> bytes:
    return pack(*optimizer_parts(opt.state_dict()))


def load_optimizer(opt: optim.Optimizer, blob: bytes) -> None:
    load_optimizer_state(opt, optimizer_from_parts(*unpack(blob)))


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": str(value)}
    if isinstance(value, Counter):  # MultiStepLR's milestones: int keys, which JSON would make strings
        return {"counter": [[k, v] for k, v in value.items()]}
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, torch.Tensor):  # a tensor hyper-parameter (rare): keep its value
        return value.item() if value.numel() == 1 else value.tolist()
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"float"}:
            return float(value["float"])
        if set(value) == {"counter"}:
            return Counter({k: v for k, v in value["counter"]})
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _retuple(saved: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """JSON has no tuples; give back the fresh optimizer's tuple-ness (``betas``) and non-finite floats."""
    out = {}
    for key, value in saved.items():
        value = _from_json(value)
        if isinstance(value, list) and isinstance(like.get(key), tuple):
            value = tuple(value)
        out[key] = value
    return out


# --- schedulers ---------------------------------------------------------------------------------------------------


def scheduler_to_json(sd: dict[str, Any]) -> dict[str, Any]:
    """A ``torch.optim.lr_scheduler`` ``state_dict()`` as JSON (its values are numbers, lists and strings)."""
    out: dict[str, Any] = _json_value(sd)
    return out


def scheduler_from_json(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = _from_json(doc)
    return out


# --- RNG ----------------------------------------------------------------------------------------------------------


def rng_state(device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The global generators a forward may draw from (dropout): the CPU one, and the device's."""
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


# --- a training run -------------------------------------------------------------------------------------------------

_MODEL, _OPTIM, _RNG, _ORDER, _ORDER_RNG = "model.", "optim.", "rng.", "order", "order_rng"


@dataclass
class TrainState:
    """Everything that makes a resumed run continue bit for bit: weights, optimizer, scheduler, RNGs, data order."""

    step: int
    epoch: int  # completed epochs
    cursor: int  # samples of the current epoch already seen
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # optimizer.state_dict(), tensors cloned
    rng: dict[str, torch.Tensor]  # rng_state() plus the data shuffler's, as "shuffle"
    order: torch.Tensor | None = None  # the current epoch's permutation, None between epochs
    # The shuffler's state before it drew ``order``: kept in its place (5 KB, not 8 bytes a sample), and the
    # permutation drawn again from it on load.
    order_rng: torch.Tensor | None = None
    scheduler: dict[str, Any] | None = None  # lr_scheduler.state_dict(), when the run has one
    scaler: dict[str, Any] | None = None  # GradScaler.state_dict() (plain numbers), when the run scales its loss
    recent_losses: list[float] | None = None  # a loss-spike breakpoint's window


def pack_train_state(state: TrainState) -> bytes:
    tensors: dict[str, torch.Tensor] = {_MODEL + k: v for k, v in state.model.items()}
    tensors.update({_RNG + k: v for k, v in state.rng.items()})
    if state.order_rng is not None and state.cursor > 0:  # at cursor 0 the next batch draws a new order
        tensors[_ORDER_RNG] = state.order_rng
    elif state.order is not None:
        tensors[_ORDER] = state.order
    opt_tensors, opt_meta = optimizer_parts(state.optimizer, _OPTIM)
    tensors.update(opt_tensors)
    meta = {
        "step": state.step,
        "epoch": state.epoch,
        "cursor": state.cursor,
        "optimizer": opt_meta,
        "scheduler": None if state.scheduler is None else scheduler_to_json(state.scheduler),
        "scaler": state.scaler,
        "recent_losses": state.recent_losses,
    }
    return pack(tensors, meta)


def unpack_train_state(blob: bytes) -> TrainState:
    tensors, meta = unpack(blob)
    model = {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    rng = {k[len(_RNG) :]: v for k, v in tensors.items() if k.startswith(_RNG)}
    return TrainState(
        step=meta["step"],
        epoch=meta["epoch"],
        cursor=meta["cursor"],
        model=model,
        optimizer=optimizer_from_parts(tensors, meta["optimizer"], _OPTIM),
        rng=rng,
        order=tensors.get(_ORDER),
        order_rng=tensors.get(_ORDER_RNG),
        scheduler=None if meta.get("scheduler") is None else scheduler_from_json(meta["scheduler"]),
        scaler=meta.get("scaler"),
        recent_losses=meta.get("recent_losses"),
    )


def pack_weights(model: dict[str, torch.Tensor], step: int, epoch: int) -> bytes:
    """The model's ``state_dict()`` alone: what users download and ``load_state_dict``."""
    return to_safetensors(model, metadata={"step": str(step), "epoch": str(epoch)})


def weights_of(blob: bytes) -> bytes:
    """The ``pack_weights`` file of a ``pack_train_state`` one."""
    state = unpack_train_state(blob)
    return pack_weights(state.model, state.step, state.epoch)
