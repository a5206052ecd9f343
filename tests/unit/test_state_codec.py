"""State codecs round-trip bit for bit: a reloaded optimizer takes the same next step."""

from __future__ import annotations

import pytest
import torch
from torch import nn, optim

from models.nn import state_codec as C
from tests.lenet import Net, ResBlock


def _train(net: nn.Module, opt: optim.Optimizer, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        nn.MSELoss()(net(torch.randn(2, 1, 32, 32, generator=gen)), torch.randn(2, 10, generator=gen)).backward()
        opt.step()


@pytest.mark.parametrize(
    "make",
    [
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
