"""State codecs round-trip bit for bit: a reloaded optimizer takes the same next step."""

from __future__ import annotations

import pytest
import torch
from torch import nn, optim

from models.nn import state_codec as C
from models.nn.objectives import build_optimizer, build_scheduler
from models.spec.optimizers import OPTIMIZER_TYPES
from models.spec.schedulers import SCHEDULER_TYPES
from tests.lenet import Net, ResBlock
from worker.checkpoint import to_drop


def _train(net: nn.Module, opt: optim.Optimizer, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        nn.MSELoss()(net(torch.randn(2, 1, 32, 32, generator=gen)), torch.randn(2, 10, generator=gen)).backward()
        opt.step()


def _spec(cls: type, **fields: object) -> object:
    return cls.model_validate({"type": cls.model_fields["type"].annotation.__args__[0], **fields})


CATALOGUE = [lambda ps, cls=cls: build_optimizer(_spec(cls), ps) for cls in OPTIMIZER_TYPES]


@pytest.mark.parametrize(
    "make",
    [
        *CATALOGUE,
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        lambda ps: optim.Adam(ps, lr=1e-3, betas=(0.8, 0.9)),
        lambda ps: optim.AdamW(ps, amsgrad=True),
        lambda ps: optim.RMSprop(ps, centered=True, momentum=0.5),
        lambda ps: optim.Adagrad(ps),
        lambda ps: optim.SGD(ps, lr=0.1),
    ],
)
def test_optimizer_reload_takes_the_same_steps(make) -> None:
    torch.manual_seed(0)
    a = Net()
    opt_a = make(a.parameters())
    _train(a, opt_a, 2, seed=1)
    blob = C.optimizer_to_bytes(opt_a)
    b = Net()
    b.load_state_dict(a.state_dict())
    opt_b = make(b.parameters())
    C.load_optimizer(opt_b, blob)
    assert opt_b.param_groups[0].keys() == opt_a.param_groups[0].keys()
    assert all(type(opt_b.param_groups[0][k]) is type(v) for k, v in opt_a.param_groups[0].items() if k != "params")
    _train(a, opt_a, 2, seed=2)
    _train(b, opt_b, 2, seed=2)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


SCHEDULER_ARGS = {
    "StepLR": {"step_size": 2},
    "MultiStepLR": {"milestones": [1, 3]},
    "ExponentialLR": {"gamma": 0.9},
    "CosineAnnealingLR": {"T_max": 5},
    "OneCycleLR": {"max_lr": 0.5},
    "ReduceLROnPlateau": {"patience": 0},
}


@pytest.mark.parametrize("cls", SCHEDULER_TYPES, ids=lambda c: c.__name__)
def test_train_state_with_scheduler_round_trips(cls: type) -> None:
    """Weights, optimizer, scheduler, RNG and data order through one file, and the same next steps after."""
    torch.manual_seed(0)
    spec = _spec(cls, **SCHEDULER_ARGS.get(cls.__name__, {}))
    a = Net()
    opt_a = optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    sched_a = build_scheduler(spec, opt_a, total_steps=10)

    def advance(opt: optim.Optimizer, sched: object, net: Net) -> None:
        _train(net, opt, 1, seed=4)
        sched.step(1.0) if isinstance(sched, optim.lr_scheduler.ReduceLROnPlateau) else sched.step()

    for _ in range(3):
        advance(opt_a, sched_a, a)
    state = C.TrainState(
        step=3,
        epoch=1,
        cursor=2,
        model=a.state_dict(),
        optimizer=opt_a.state_dict(),
        rng={**C.rng_state(), "shuffle": torch.Generator().manual_seed(5).get_state()},
        order=torch.randperm(7),
        scheduler=sched_a.state_dict(),
    )
    back = C.unpack_train_state(C.pack_train_state(state))
    assert (back.step, back.epoch, back.cursor) == (3, 1, 2) and torch.equal(back.order, state.order)
    assert C.same_rng(back.rng, state.rng) and back.scheduler == state.scheduler
    b = Net()
    b.load_state_dict(back.model)
    opt_b = optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    sched_b = build_scheduler(spec, opt_b, total_steps=10)
    C.load_optimizer_state(opt_b, back.optimizer)
    sched_b.load_state_dict(back.scheduler)
    for _ in range(3):
        advance(opt_a, sched_a, a)
        advance(opt_b, sched_b, b)
        assert opt_a.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"]
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))


def test_retention_keeps_the_last_k_and_every_mth() -> None:
    assert to_drop([10, 20, 30, 40, 50], keep_last=2, keep_every=0) == [10, 20, 30]
    assert to_drop([10, 20, 30, 40, 50], keep_last=2, keep_every=20) == [10, 30]
    assert to_drop([5], keep_last=1, keep_every=0) == []


def test_split_state_grads_and_pack() -> None:
    torch.manual_seed(0)
    net = ResBlock()
    params, buffers = C.split_state(net)
    assert set(buffers) == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    assert set(params) == {n for n, _ in net.named_parameters()}
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    net.stem.bias.grad = None
    grads = C.grads(net)
    assert "stem.bias" not in grads and len(grads) == len(params) - 1
    tensors, meta = C.unpack(C.pack(grads, {"note": [1, "x"]}))
    assert meta == {"note": [1, "x"]} and all(torch.equal(tensors[k], grads[k]) for k in grads)
    other = ResBlock()
    C.set_grads(other, tensors)
    assert other.stem.bias.grad is None and torch.equal(other.head.weight.grad, net.head.weight.grad)


def test_rng_state_restores_the_same_draws() -> None:
    torch.manual_seed(3)
    state = C.rng_state()
    first = torch.rand(5)
    C.set_rng_state(C.unpack(C.pack(state))[0])
    assert torch.equal(torch.rand(5), first)
    assert C.same_rng(state, C.unpack(C.pack(state))[0]) and not C.same_rng(state, C.rng_state())
