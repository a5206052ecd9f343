"""Schedulers and gradient clipping in the loop against hand-written PyTorch, and their exact resume."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim import lr_scheduler

from models.nn.build import build_network
from models.nn.state_codec import pack_train_state, unpack_train_state
from models.spec.network import NetworkSpec
from tests.integration.jobs_helpers import MLP
from worker.engine import Data, ListHooks, TrainConfig, Trainer

N, BATCH, STEPS = 40, 8, 23  # 5 steps per epoch, the last epoch cut short
Make = Callable[[optim.Optimizer], Any]
SCHEDULERS: dict[str, tuple[Make, str]] = {
    "StepLR": (lambda o: lr_scheduler.StepLR(o, step_size=1, gamma=0.5), "epoch"),
    "MultiStepLR": (lambda o: lr_scheduler.MultiStepLR(o, milestones=[2, 3], gamma=0.3), "epoch"),
    "ExponentialLR": (lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9), "epoch"),
    "CosineAnnealingLR": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=7), "step"),
    "OneCycleLR": (lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=STEPS), "step"),
    "LinearLR": (lambda o: lr_scheduler.LinearLR(o, start_factor=0.25, total_iters=3), "epoch"),
    "ReduceLROnPlateau": (lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5), "epoch"),
}


def _data() -> Data:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn((N, 6), generator=g), torch.randint(3, (N,), generator=g)
    return Data(x, y, x[:10] * 3.0, y[:10], 3)


def _trainer(name: str, clip: float | None = None) -> Trainer:
    make, interval = SCHEDULERS[name]
    torch.manual_seed(1)
    net = build_network(NetworkSpec.model_validate(MLP))
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    cfg = TrainConfig(
        total_steps=STEPS,
        batch_size=BATCH,
        seed=1,
        classification=True,
        checkpoint_every=7,
        flush_every=1,
        clip_grad_norm=clip,
        scheduler_interval=interval,  # type: ignore[arg-type]
    )
    return Trainer(net, nn.CrossEntropyLoss(), opt, _data(), cfg, make(opt))


def _by_hand(name: str, clip: float | None) -> tuple[list[float], list[float], dict[str, torch.Tensor]]:
    make, interval = SCHEDULERS[name]
    data = _data()
    torch.manual_seed(1)
    net = build_network(NetworkSpec.model_validate(MLP))
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = make(opt)
    shuffler = torch.Generator().manual_seed(1)
    step, lrs, losses = 0, [], []
    while step < STEPS:
        for idx in torch.randperm(N, generator=shuffler).split(BATCH):
            if step == STEPS:
                break
            loss = F.cross_entropy(net(data.x[idx]), data.y[idx])
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), clip)
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if interval == "step":
                sched.step()
        if step % (N // BATCH) == 0 and interval == "epoch":
            if isinstance(sched, lr_scheduler.ReduceLROnPlateau):
                net.eval()
                with torch.no_grad():
                    sched.step(float(F.cross_entropy(net(data.x_val), data.y_val)))
                net.train()
            else:
                sched.step()
    return lrs, losses, net.state_dict()


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_lr_column_and_weights_match_pytorch(name: str) -> None:
    clip = 0.5 if name == "StepLR" else None
    trainer, hooks = _trainer(name, clip), ListHooks()
    assert trainer.run(hooks) == "finished"
    lrs, losses, weights = _by_hand(name, clip)
    assert [r["lr"] for r in hooks.all_records] == lrs
    assert len(set(lrs)) > 1, "the schedule never changed the rate"
    assert [r["loss"] for r in hooks.all_records] == losses
    assert all(torch.equal(trainer.net.state_dict()[k], v) for k, v in weights.items())


@pytest.mark.parametrize("name", ["StepLR", "OneCycleLR", "ReduceLROnPlateau", "MultiStepLR"])
def test_scheduler_state_resumes_exactly(name: str) -> None:
    whole, hooks = _trainer(name), ListHooks()
    whole.run(hooks)
    first, part = _trainer(name), ListHooks(stop_after=15)
    assert first.run(part) == "stopped"
    state = part.states[-1]
    assert state.step == 14 and state.scheduler is not None
    torch.manual_seed(999)
    second, rest = _trainer(name), ListHooks()
    second.load_state(unpack_train_state(pack_train_state(state)))
    assert second.run(rest) == "finished"
    assert [r["lr"] for r in rest.all_records] == [r["lr"] for r in hooks.all_records[14:]]
    assert all(torch.equal(second.net.state_dict()[k], v) for k, v in whole.net.state_dict().items())
