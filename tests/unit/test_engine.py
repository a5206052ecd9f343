"""The training loop against hand-written PyTorch: same weights, same gradients, exact resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.data.transforms import Pipeline, parse
from models.nn.build import build_network
from models.nn.state_codec import pack_train_state, pack_weights, unpack_train_state
from models.spec.network import NetworkSpec
from models.wire.tensors import from_safetensors
from tests.lenet import LENET_SPEC, Net
from worker.engine import Data, ListHooks, NonFiniteLoss, TrainConfig, Trainer

MLP = {
    "name": "MLP",
    "input_shape": [6],
    "layers": [
        {"name": "fc1", "type": "Linear", "in_features": 6, "out_features": 16},
        {"type": "relu"},
        {"name": "drop", "type": "Dropout", "p": 0.2},
        {"name": "fc2", "type": "Linear", "in_features": 16, "out_features": 3},
    ],
}


def _data(n: int = 50, classes: bool = True) -> Data:
    g = torch.Generator().manual_seed(3)
    x = torch.randn((n, 6), generator=g)
    y = torch.randint(3, (n,), generator=g) if classes else torch.randn((n, 3), generator=g)
    return Data(x, y, x[:10], y[:10], 3 if classes else None)


def _trainer(cfg: TrainConfig, data: Data, spec: dict = MLP, opt: str = "sgd") -> Trainer:
    torch.manual_seed(cfg.seed)
    net = build_network(NetworkSpec.model_validate(spec))
    optimizer = (
        torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        if opt == "sgd"
        else torch.optim.Adam(net.parameters(), lr=1e-3)
    )
    loss = nn.CrossEntropyLoss() if cfg.classification else nn.MSELoss()
    return Trainer(net, loss, optimizer, data, cfg)


def test_matches_a_hand_written_loop() -> None:
    data = _data(n=40, classes=False)
    cfg = TrainConfig(total_steps=9, batch_size=8, seed=5, gradients_every=3, flush_every=1)
    trainer, hooks = _trainer(cfg, data), ListHooks()
    assert trainer.run(hooks) == "finished"

    torch.manual_seed(5)
    ref = build_network(NetworkSpec.model_validate(MLP))
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    shuffler = torch.Generator().manual_seed(5)
    step, losses = 0, []
    while step < 9:
        for idx in torch.randperm(40, generator=shuffler).split(8):
            if step == 9:
                break
            loss = F.mse_loss(ref(data.x[idx]), data.y[idx])
            loss.backward()
            step += 1
            if step % 3 == 0:
                for name, p in ref.named_parameters():
                    assert torch.equal(hooks.grads[step][name], p.grad), (step, name)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    assert [r["loss"] for r in hooks.all_records] == losses
    assert [r["step"] for r in hooks.all_records] == list(range(1, 10))
    assert [r["epoch"] for r in hooks.all_records] == [1] * 5 + [2] * 4
    for a, b in zip(trainer.net.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("opt", ["sgd", "adam", "sgd+flips"])
def test_resume_is_bit_exact(opt: str) -> None:
    """Stopped after a checkpoint and resumed from its bytes, the run ends on the same weights; random flips
    (models.data.transforms) included, drawn by the batch's place in the data order."""
    data = _data()
    if opt.endswith("+flips"):
        opt, flips = "sgd", Pipeline(parse([{"type": "random_horizontal_flip"}]), seed=1)
        data.augment = lambda x, epoch, start: flips.augment(x.view(-1, 1, 2, 3), epoch, start).reshape(-1, 6)
    cfg = TrainConfig(total_steps=23, batch_size=8, seed=1, classification=True, checkpoint_every=5, flush_every=1)
    whole = _trainer(cfg, data, opt=opt)
    whole.run(ListHooks())

    first, hooks = _trainer(cfg, data, opt=opt), ListHooks(stop_after=12)
    assert first.run(hooks) == "stopped"
    state = hooks.states[-1]
    assert state.step == 10 and state.order is not None  # mid-epoch: the order travels with the checkpoint...
    packed = unpack_train_state(pack_train_state(state))
    assert packed.order is None and packed.order_rng is not None  # ...as the shuffler's state that drew it
    again = unpack_train_state(pack_train_state(packed))  # and it survives another trip (a session's state)
    assert again.order_rng is not None and torch.equal(again.order_rng, packed.order_rng)
    torch.manual_seed(999)  # whatever the process did in between must not matter
    second = _trainer(cfg, data, opt=opt)
    second.load_state(packed)
    assert second.order is not None and torch.equal(second.order, state.order)
    rest = ListHooks()
    assert second.run(rest) == "finished"
    assert [r["step"] for r in rest.all_records] == list(range(11, 24))
    end = second.state()
    resumed, uninterrupted = from_safetensors(pack_weights(end.model, end.step, end.epoch)), whole.net.state_dict()
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_a_checkpoint_mid_epoch_does_not_grow_with_the_dataset() -> None:
    """A 200,000-sample epoch's order would be 1.6 MB of int64 in every checkpoint; its seed state is 5 KB."""
    small, large = _data(), _data(200_000)
    sizes = []
    for data in (small, large):
        cfg = TrainConfig(total_steps=1, batch_size=8, seed=1, classification=True, flush_every=1)
        trainer = _trainer(cfg, data)
        trainer.run(ListHooks())
        sizes.append(len(pack_train_state(trainer.state())))
    assert sizes[1] == sizes[0], sizes


def test_accuracy_eval_and_lenet_shapes() -> None:
    g = torch.Generator().manual_seed(0)
    data = Data(torch.randn((12, 1, 32, 32), generator=g), torch.randint(10, (12,), generator=g))
    data.x_val, data.y_val = data.x[:4], data.y[:4]
    cfg = TrainConfig(total_steps=3, batch_size=4, classification=True, graph=True, flush_every=1)
    trainer, hooks = _trainer(cfg, data, spec=LENET_SPEC), ListHooks()
    trainer.run(hooks)
    last = hooks.all_records[-1]
    assert 0 <= last["accuracy"] <= 1 and 0 <= last["val_accuracy"] <= 1 and "val_loss" in last
    assert hooks.losses_for_graph[0].grad_fn is not None
    torch.manual_seed(0)
    assert torch.equal(Net().conv1.weight, _trainer(cfg, data, spec=LENET_SPEC).net.conv1.weight)


def test_non_finite_loss_stops_with_the_step() -> None:
    data = _data(classes=False)
    data.x[7, 0] = float("nan")
    cfg = TrainConfig(total_steps=20, batch_size=4, shuffle=False, flush_every=10)
    hooks = ListHooks()
    with pytest.raises(NonFiniteLoss, match="at step 2"):
        _trainer(cfg, data).run(hooks)
    assert [r["step"] for r in hooks.all_records] == [1, 2]
