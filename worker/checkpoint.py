"""TrainState <-> safetensors bytes. Two files: the model's state_dict alone (what users download and
``load_state_dict``), and the full resume state. Tensors go in the tensor section, the rest (step,
optimizer hyper-parameters, non-tensor optimizer state) in the JSON header; no pickle anywhere.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from models.wire.tensors import from_safetensors, safetensors_metadata, to_safetensors
from worker.engine import TrainState

_MODEL, _OPTIM, _RNG, _ORDER = "model.", "optim.", "rng.", "order"


def pack_model(state: TrainState) -> bytes:
    return to_safetensors(state.model, metadata={"step": str(state.step), "epoch": str(state.epoch)})


def pack_resume(state: TrainState) -> bytes:
    tensors: dict[str, torch.Tensor] = {_MODEL + k: v for k, v in state.model.items()}
    tensors.update({_RNG + k: v for k, v in state.rng.items()})
    if state.order is not None:
        tensors[_ORDER] = state.order
    loose: dict[str, dict[str, Any]] = {}
    for pid, entry in state.optimizer["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIM}{pid}.{name}"] = value
            else:
                loose.setdefault(str(pid), {})[name] = value
    meta = {
        "step": state.step,
        "epoch": state.epoch,
        "cursor": state.cursor,
        "param_groups": state.optimizer["param_groups"],
        "optim_loose": loose,
    }
    return to_safetensors(tensors, metadata={"gradserve": json.dumps(meta)})


def unpack_resume(blob: bytes) -> TrainState:
    meta = json.loads(safetensors_metadata(blob)["gradserve"])
    tensors = from_safetensors(blob)
    optim_state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in meta["optim_loose"].items()}
    model, rng = {}, {}
    for key, value in tensors.items():
        if key.startswith(_MODEL):
            model[key[len(_MODEL) :]] = value
        elif key.startswith(_RNG):
            rng[key[len(_RNG) :]] = value
        elif key.startswith(_OPTIM):
            pid, _, name = key[len(_OPTIM) :].partition(".")
            optim_state.setdefault(int(pid), {})[name] = value
    return TrainState(
        step=meta["step"],
        epoch=meta["epoch"],
        cursor=meta["cursor"],
        model=model,
        rng=rng,
        optimizer={"state": optim_state, "param_groups": meta["param_groups"]},
        order=tensors.get(_ORDER),
    )
