"""Per-layer activations and their gradients at one step of a job, replayed after the fact.

A session opened at the step holds the job's exact state and the step's batch; this runs that step's
forward with hooks on the asked layers, the job's loss and backward, and reads what each layer put out
and the gradient that came back into it. The session is left as it was: its parameters' gradients and
its RNG are restored, and nothing of it is written back.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
from pydantic import TypeAdapter
from torch import nn

from models.errors import Conflict, InvalidInput
from models.nn import state_codec
from models.nn.objectives import build_loss
from models.spec.losses import LossSpec
from models.wire.tensors import scalar, to_safetensors
from worker.sessions import LiveSession, Outcome

_LOSS: TypeAdapter[Any] = TypeAdapter(LossSpec)


def activations(
    s: LiveSession,
    batch: dict[str, torch.Tensor],
    criterion: dict[str, Any],
    layers: list[str],
    *,
    bins: int,
    tensors: bool,
) -> Outcome:
    if s.meta.get("format") == "export":  # its forward runs the exported graph, so module hooks never fire
        raise Conflict(
            "activations of an exported network's layers are not there yet: open the job at the step "
            "(POST /v1/jobs/ID/sessions) and read its output, loss and gradients there"
        )
    modules = dict(s.net.named_modules())
    for name in layers:
        if name not in modules or not name:
            close = difflib.get_close_matches(name, [m for m in modules if m], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; layers: {', '.join(m for m in modules if m)}"
            raise InvalidInput(f"no layer '{name}' in the network{hint}", ("query", "layers"))
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(_: nn.Module, __: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                if out.requires_grad:
                    out.retain_grad()
                outputs[name] = out

        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in layers]
    saved_grads = {n: p.grad for n, p in s.net.named_parameters()}
    rng_now = state_codec.rng_state(s.device)
    try:
        state_codec.set_rng_state(s.rng, s.device)  # the step's own draws (dropout) as the job made them
        for p in s.net.parameters():
            p.grad = None
        x, y = batch["inputs"].to(s.device), batch["targets"].to(s.device)
        loss = build_loss(_LOSS.validate_python(criterion), s.device)(s.net(x), y)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
        for n, p in s.net.named_parameters():
            p.grad = saved_grads[n]
        state_codec.set_rng_state(rng_now, s.device)
    silent = [name for name in layers if name not in outputs]
    if silent:
        raise InvalidInput(
            f"layer{'s' if len(silent) > 1 else ''} {', '.join(repr(n) for n in silent)} put out no tensor in the "
            "step's forward (not called, or its output is a tuple): name the modules inside it",
            ("query", "layers"),
        )
    if tensors:
        found = {f"{n}.output": t.detach() for n, t in outputs.items()}
        found.update({f"{n}.grad": t.grad for n, t in outputs.items() if t.grad is not None})
        return Outcome(to_safetensors(found, metadata={"loss": repr(loss.item())}), media="application/octet-stream")
    body = {
        "loss": scalar(loss.item()),
        "layers": {
            name: {
                "shape": list(out.shape),
                "output": _stats(out.detach(), bins),
                "grad": None if out.grad is None else _stats(out.grad, bins),
            }
            for name, out in outputs.items()
        },
    }
    return Outcome(body)


def _stats(t: torch.Tensor, bins: int) -> dict[str, Any]:
    t = t.detach().float()
    low, high = t.min(), t.max()
    row = torch.stack([t.mean(), t.std() if t.numel() > 1 else torch.zeros(()), low, high]).tolist()
    finite = all(map(math.isfinite, row[2:]))
    histogram = None
    if finite:  # histc needs finite bounds: a step that broke may have none
        counts = torch.histc(t, bins=bins, min=row[2], max=row[3]).tolist() if row[3] > row[2] else [t.numel()]
        histogram = {"counts": [int(c) for c in counts], "min": row[2], "max": row[3]}
    return {
        "mean": scalar(row[0]),
        "std": scalar(row[1]),
        "min": scalar(row[2]),
        "max": scalar(row[3]),
        "histogram": histogram,
    }
