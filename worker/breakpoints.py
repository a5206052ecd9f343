"""Breakpoints: rules the loop checks after a step's backward and before its update. The first that holds
stops the run there, with the state from before the step, so the job can be opened, resumed or cancelled
at exactly the step that broke. Plain PyTorch, like the loop.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from models.nn.state_codec import TrainState


@dataclass(frozen=True)
class Rules:
    nonfinite: bool = False
    grad_norm_above: float | None = None
    loss_above: float | None = None
    spike_factor: float | None = None
    spike_window: int = 20


@dataclass(frozen=True)
class Hit:
    """Which rule held, at which step, on what value; ``parameter``: the first non-finite gradient's."""

    rule: str
    step: int
    value: float | str
    parameter: str | None = None

    def doc(self) -> dict[str, Any]:
        return asdict(self)


class Paused(Exception):
    def __init__(self, hit: Hit, state: TrainState) -> None:
        super().__init__(f"breakpoint {hit.rule} at step {hit.step}: {hit.value}")
        self.hit, self.state = hit, state


class Watch:
    """Checks one model's steps against the rules; one device sync per step for all of them."""

    def __init__(self, rules: Rules, net: nn.Module) -> None:
        self.rules = rules
        self.params = dict(net.named_parameters())
        self.recent: deque[float] = deque(maxlen=rules.spike_window)
        self.order: list[str] = []  # parameter names as their gradients landed: backward order
        self.passed: int | None = None  # a step resumed past: a debugger's "continue" runs it unchecked
        if rules.nonfinite:
            for name, p in self.params.items():
                if p.requires_grad:
                    p.register_post_accumulate_grad_hook(self._landed(name))  # type: ignore[no-untyped-call]

    def _landed(self, name: str) -> Any:
        def hook(_: torch.Tensor) -> None:
            self.order.append(name)

        return hook

    def begin_step(self) -> None:
        self.order.clear()

    def check(self, step: int, loss: torch.Tensor, *, grads_scaled: bool) -> Hit | None:
        """``grads_scaled``: a loss scaler's overflowing gradients are its own to skip, so only the loss is
        checked for being finite then."""
        r = self.rules
        if step == self.passed:
            return None
        named = [(n, p.grad) for n, p in self.params.items() if p.grad is not None]
        values = [loss.detach().float().reshape(())]
        if r.grad_norm_above is not None:
            norms = [torch.linalg.vector_norm(g.detach().float()) for _, g in named]
            values.append(torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros_like(values[0]))
        check_grads = r.nonfinite and not grads_scaled
        if check_grads:
            values += [torch.isfinite(g).all().float() for _, g in named]
        read = torch.stack(values).tolist()  # the one sync
        value = read[0]
        if r.nonfinite and not math.isfinite(value):
            return Hit("nonfinite", step, str(value), self._first_bad(named, read, check_grads))
        if check_grads and not all(read[len(read) - len(named) :]):
            return Hit("nonfinite", step, value, self._first_bad(named, read, check_grads))
        if r.grad_norm_above is not None and read[1] > r.grad_norm_above:
            return Hit("grad_norm_above", step, read[1])
        if r.loss_above is not None and value > r.loss_above:
            return Hit("loss_above", step, value)
        if r.spike_factor is not None and len(self.recent) == self.recent.maxlen:
            mean = sum(self.recent) / len(self.recent)
            if value > r.spike_factor * mean:
                return Hit("loss_spike", step, value)
        if math.isfinite(value):
            self.recent.append(value)
        return None

    def _first_bad(self, named: list[tuple[str, torch.Tensor]], read: list[float], checked: bool) -> str | None:
        if not checked:
            return None
        flags = dict(zip((n for n, _ in named), read[len(read) - len(named) :], strict=True))
        landed = [n for n in dict.fromkeys(self.order) if n in flags]  # first landing of each, in order
        return next((n for n in landed if not flags[n]), None)

    # The spike window is part of a run's state: a resumed run must judge its next steps as the whole would.
    def state(self) -> list[float]:
        return list(self.recent)

    def load_state(self, recent: list[float]) -> None:
        self.recent.clear()
        self.recent.extend(recent)
