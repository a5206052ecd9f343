"""Breakpoints in the loop: which step they stop at, what they name, and the state they stop with."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.nn.build import build_network
from models.nn.state_codec import pack_train_state, unpack_train_state
from models.spec.network import NetworkSpec
from tests.unit.test_engine import MLP, _data
from worker.breakpoints import Hit, Paused, Rules
from worker.engine import ListHooks, TrainConfig, Trainer


def _trainer(cfg: TrainConfig, lr: float = 0.05) -> Trainer:
    torch.manual_seed(cfg.seed)
    net = build_network(NetworkSpec.model_validate(MLP))  # with dropout: the RNG state must come back exactly
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    return Trainer(net, nn.MSELoss(), opt, _data(n=40, classes=False), cfg)


def _paused(trainer: Trainer, hooks: ListHooks | None = None) -> Paused:
    with pytest.raises(Paused) as caught:
        trainer.run(hooks or ListHooks())
    return caught.value


def test_a_diverging_run_pauses_at_its_first_non_finite_step_before_the_update() -> None:
    cfg = TrainConfig(total_steps=60, batch_size=8, seed=5, stop_on_nan=False, breakpoints=Rules(nonfinite=True))
    hooks = ListHooks()
    paused = _paused(_trainer(cfg, lr=3.0), hooks)

    torch.manual_seed(5)  # the same loop, by hand, watching for the first non-finite loss or gradient
    ref = build_network(NetworkSpec.model_validate(MLP))
    opt = torch.optim.SGD(ref.parameters(), lr=3.0, momentum=0.9)
    order: list[str] = []
    for name, p in ref.named_parameters():
        p.register_post_accumulate_grad_hook(lambda _, name=name: order.append(name))
    data, shuffler, step, before = _data(n=40, classes=False), torch.Generator().manual_seed(5), 0, None
    while before is None:
        for idx in torch.randperm(40, generator=shuffler).split(8):
            step += 1
            order.clear()
            loss = F.mse_loss(ref(data.x[idx]), data.y[idx])
            loss.backward()
            bad = [n for n in dict.fromkeys(order) if not torch.isfinite(dict(ref.named_parameters())[n].grad).all()]
            if not torch.isfinite(loss) or bad:
                before = {k: v.clone() for k, v in ref.state_dict().items()}
                break
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert paused.hit.rule == "nonfinite" and paused.hit.step == step > 1
    assert paused.hit.parameter == (bad[0] if bad else None)  # the loss overflowed first, or a gradient did
    assert paused.state.step == step - 1 and [r["step"] for r in hooks.all_records] == list(range(1, step))
    for name, tensor in paused.state.model.items():  # no update from the paused step
        assert torch.equal(tensor, before[name]), name


def test_a_non_finite_gradient_names_the_first_parameter_backward_reaches() -> None:
    cfg = TrainConfig(total_steps=10, batch_size=8, seed=1, shuffle=False, breakpoints=Rules(nonfinite=True))
    trainer = _trainer(cfg)
    trainer.data.x[19, 2] = float("nan")  # in the third batch of the unshuffled order
    paused = _paused(trainer)
    torch.manual_seed(1)
    ref = build_network(NetworkSpec.model_validate(MLP))
    order: list[str] = []
    for name, p in ref.named_parameters():
        p.register_post_accumulate_grad_hook(lambda _, name=name: order.append(name))
    F.mse_loss(ref(trainer.data.x[16:24]), trainer.data.y[16:24]).backward()
    assert (paused.hit.rule, paused.hit.step, paused.hit.value) == ("nonfinite", 3, "nan")
    assert paused.hit.parameter == order[0] == "fc2.bias"


def test_resuming_a_paused_state_continues_as_the_undisturbed_run() -> None:
    plain = TrainConfig(total_steps=12, batch_size=8, seed=7)
    whole, whole_hooks = _trainer(plain), ListHooks()
    whole.run(whole_hooks)
    threshold = sorted(r["loss"] for r in whole_hooks.all_records)[-3]  # some mid-run step crosses it
    first_above = next(r["step"] for r in whole_hooks.all_records if r["loss"] > threshold)

    watched = dataclasses.replace(plain, breakpoints=Rules(loss_above=threshold))
    paused = _paused(_trainer(watched))
    assert paused.hit == Hit("loss_above", first_above, whole_hooks.all_records[first_above - 1]["loss"])

    resumed, hooks = _trainer(plain), ListHooks()
    resumed.load_state(unpack_train_state(pack_train_state(paused.state)))
    assert resumed.run(hooks) == "finished"
    assert [r["loss"] for r in hooks.all_records] == [r["loss"] for r in whole_hooks.all_records[first_above - 1 :]]
    for a, b in zip(resumed.net.state_dict().values(), whole.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_gradient_norm_and_loss_spike_rules() -> None:
    plain = TrainConfig(total_steps=10, batch_size=8, seed=3, gradients_every=1)
    hooks = ListHooks()
    _trainer(plain).run(hooks)
    norms = {
        step: torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])).item()
        for step, grads in hooks.grads.items()
    }
    limit = sorted(norms.values())[-2]
    paused = _paused(_trainer(dataclasses.replace(plain, breakpoints=Rules(grad_norm_above=limit))))
    first = min(s for s, v in norms.items() if v > limit)
    assert (paused.hit.rule, paused.hit.step) == ("grad_norm_above", first)
    assert paused.hit.value == pytest.approx(norms[first], rel=1e-6)

    losses = [r["loss"] for r in hooks.all_records]
    spikes = [i + 1 for i in range(3, 10) if losses[i] > 1.05 * sum(losses[i - 3 : i]) / 3]
    assert spikes  # this seed's losses wobble: steps 5, 9 and 10 rise above 1.05x their last three's mean
    paused = _paused(_trainer(dataclasses.replace(plain, breakpoints=Rules(spike_factor=1.05, spike_window=3))))
    assert (paused.hit.rule, paused.hit.step) == ("loss_spike", spikes[0])
