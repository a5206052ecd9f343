"""Speed settings of the loop against hand-written PyTorch: accumulation, autocast, loss scaling, compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.nn.build import build_network
from models.nn.state_codec import pack_train_state, unpack_train_state
from models.spec.network import NetworkSpec
from tests.unit.test_engine import MLP, _data
from worker.engine import ListHooks, TrainConfig, Trainer

NO_DROPOUT = {**MLP, "layers": [layer for layer in MLP["layers"] if layer["type"] != "Dropout"]}


def _net(seed: int, spec: dict = MLP) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(NetworkSpec.model_validate(spec))


def _trainer(cfg: TrainConfig, n: int = 40, spec: dict = MLP) -> Trainer:
    net = _net(cfg.seed, spec)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    return Trainer(net, nn.MSELoss(), opt, _data(n=n, classes=False), cfg)


def _local_run(steps: int, batch: int, k: int, seed: int, precision: str = "32", n: int = 40) -> tuple:
    """The same training written out by hand: k consecutive batches of each epoch's order per step."""
    data = _data(n=n, classes=False)
    ref = _net(seed)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    shuffler = torch.Generator().manual_seed(seed)
    scaler = torch.amp.GradScaler("cpu") if precision == "16-mixed" else None
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    done, losses = 0, []
    while done < steps:
        batches = torch.randperm(n, generator=shuffler).split(batch)
        for group in [batches[i : i + k] for i in range(0, len(batches), k)]:
            if done == steps:
                break
            micro = []
            for idx in group:
                with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                    loss = F.mse_loss(ref(data.x[idx]), data.y[idx])
                scaled = loss / len(group) if len(group) > 1 else loss
                (scaler.scale(scaled) if scaler else scaled).backward()
                micro.append(loss.detach())
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append((micro[0] if len(micro) == 1 else torch.stack(micro).float().mean()).item())
            done += 1
    return losses, ref.state_dict()


def _assert_same(trainer: Trainer, hooks: ListHooks, expected: tuple) -> None:
    losses, weights = expected
    assert [r["loss"] for r in hooks.all_records] == losses
    for name, tensor in trainer.net.state_dict().items():
        assert torch.equal(tensor, weights[name]), name


def test_accumulation_takes_consecutive_batches_and_an_epochs_rest() -> None:
    # 40 samples in batches of 4 are 10 batches an epoch: steps of 3, 3, 3 and the 1 left.
    cfg = TrainConfig(total_steps=8, batch_size=4, seed=2, accumulate=3, flush_every=1)
    trainer, hooks = _trainer(cfg), ListHooks()
    assert trainer.run(hooks) == "finished"
    _assert_same(trainer, hooks, _local_run(8, 4, 3, seed=2))
    assert [r["epoch"] for r in hooks.all_records] == [1] * 4 + [2] * 4
    assert [r["samples_per_s"] is not None for r in hooks.all_records] == [True] * 8


def test_accumulated_micro_batches_average_like_one_big_batch() -> None:
    # Without dropout: its draws differ between four small batches and one big one.
    small = _trainer(TrainConfig(total_steps=5, batch_size=2, seed=4, accumulate=4, shuffle=False), spec=NO_DROPOUT)
    big = _trainer(TrainConfig(total_steps=5, batch_size=8, seed=4, shuffle=False), spec=NO_DROPOUT)
    small.run(ListHooks())
    big.run(ListHooks())
    for (name, a), b in zip(small.net.state_dict().items(), big.net.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
        assert not torch.equal(a, _net(4, NO_DROPOUT).state_dict()[name])  # both moved


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_matches_a_local_autocast_loop(precision: str) -> None:
    cfg = TrainConfig(total_steps=7, batch_size=8, seed=6, precision=precision, flush_every=1)  # type: ignore[arg-type]
    trainer, hooks = _trainer(cfg), ListHooks()
    trainer.run(hooks)
    expected = _local_run(7, 8, 1, seed=6, precision=precision)
    _assert_same(trainer, hooks, expected)
    fp32 = _local_run(7, 8, 1, seed=6)
    assert expected[0] != fp32[0]  # autocast really changed the arithmetic


def test_loss_scaled_run_resumes_bit_exact_with_its_scaler() -> None:
    cfg = TrainConfig(total_steps=9, batch_size=8, seed=1, precision="16-mixed", accumulate=2, checkpoint_every=4)
    whole, whole_hooks = _trainer(cfg), ListHooks()
    whole.run(whole_hooks)
    state = unpack_train_state(pack_train_state(whole_hooks.states[0]))
    assert state.step == 4 and state.scaler is not None and state.scaler["scale"] == 65536.0
    resumed, hooks = _trainer(cfg), ListHooks()
    resumed.load_state(state)
    resumed.run(hooks)
    assert [r["loss"] for r in hooks.all_records] == [r["loss"] for r in whole_hooks.all_records[4:]]
    for a, b in zip(resumed.net.state_dict().values(), whole.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_clipping_under_loss_scaling_clips_the_true_gradients() -> None:
    cfg = TrainConfig(total_steps=1, batch_size=8, seed=3, precision="16-mixed", clip_grad_norm=0.01, gradients_every=1)
    trainer, hooks = _trainer(cfg), ListHooks()
    trainer.run(hooks)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in hooks.grads[1].values()]))
    assert norm.item() == pytest.approx(0.01, rel=1e-3)


def test_compiled_forward_keeps_the_modules_own_state() -> None:
    # Without dropout: compiled code draws its masks from a generator of its own.
    cfg = TrainConfig(total_steps=3, batch_size=8, seed=0, compile=True, checkpoint_every=3, flush_every=1)
    trainer, hooks = _trainer(cfg, spec=NO_DROPOUT), ListHooks()
    trainer.run(hooks)
    eager_cfg = TrainConfig(total_steps=3, batch_size=8, seed=0, flush_every=1)
    eager, eager_hooks = _trainer(eager_cfg, spec=NO_DROPOUT), ListHooks()
    eager.run(eager_hooks)
    assert set(hooks.states[-1].model) == set(eager.net.state_dict())  # no "_orig_mod." prefixes
    assert [r["loss"] for r in hooks.all_records] == pytest.approx([r["loss"] for r in eager_hooks.all_records])
