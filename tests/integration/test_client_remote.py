"""The tutorial's own lines on ``client.remote(net)``: every tensor ``torch.equal`` to the same lines run
locally (at the session workers' thread count), for LeNet and a residual net with BatchNorm and cat."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from torch import nn

import gradserve
from tests.conftest import API_KEYS, Service
from tests.lenet import Net
from tests.unit.test_client_fx import Branchy, CatNet, Sine

pytestmark = pytest.mark.integration


@pytest.fixture
def gs(service: Service) -> Iterator[gradserve.Client]:
    with gradserve.Client(service.url, api_key=API_KEYS["alice"]) as c:
        yield c


def test_the_tutorial_through_remote(gs: gradserve.Client, session_threads: int) -> None:
    torch.manual_seed(0)
    net = Net()
    local = copy.deepcopy(net)
    rnet = gs.remote(net, optimizer=torch.optim.SGD, lr=0.01)
    assert repr(rnet) == repr(net)
    params = list(rnet.parameters())
    assert len(params) == 10 and params[0].size() == torch.Size([6, 1, 5, 5])

    input = torch.randn(1, 1, 32, 32)
    out = rnet(input)
    assert repr(rnet) == repr(net)  # now the service's own print(net)
    assert rnet.threads == session_threads
    want = local(input)
    assert torch.equal(out.fetch(), want) and torch.equal(torch.from_numpy(np.asarray(out)), want)
    assert out.grad_fn.name == "AddmmBackward0" and repr(out).endswith("grad_fn=<AddmmBackward0>)")

    gradient = torch.randn(1, 10)
    rnet.zero_grad()
    local.zero_grad()
    out.backward(gradient)
    want.backward(gradient)
    assert torch.equal(rnet.conv1.bias.grad, local.conv1.bias.grad)

    output = rnet(input)
    target = torch.randn(10).view(1, -1)
    criterion = nn.MSELoss()
    loss = criterion(output, target)
    local_loss = criterion(local(input), target)
    assert loss.item() == local_loss.item() and torch.equal(loss.fetch(), local_loss.detach())
    assert loss.grad_fn.name == "MseLossBackward0"
    assert loss.grad_fn.next_functions[0][0].name == local_loss.grad_fn.next_functions[0][0].name()
    walked = [n.name() for n, _ in loss.grad_fn.next_functions[0][0].next_functions]
    assert walked == [type(n).__name__ for n, _ in local_loss.grad_fn.next_functions[0][0].next_functions]
    assert loss.grad_fn.next_functions[0][0].next_functions[0][0].variable.name == "fc3.bias"
    with pytest.raises(RuntimeError, match="earlier forward"):
        out.backward(gradient)  # the session keeps only the last forward, and says so

    rnet.zero_grad()
    local.zero_grad()
    assert rnet.conv1.bias.grad is None and local.conv1.bias.grad is None
    loss.backward()
    local_loss.backward()
    assert torch.equal(rnet.conv1.bias.grad, local.conv1.bias.grad)

    learning_rate = 0.01
    rnet.sgd_update(learning_rate)
    for f in local.parameters():
        f.data.sub_(f.grad.data * learning_rate)
    assert all(torch.equal(rnet.state_dict()[k], v) for k, v in local.state_dict().items())

    optimizer = torch.optim.SGD(local.parameters(), lr=0.01)
    for _ in range(2):
        rnet.zero_grad()
        optimizer.zero_grad()
        criterion(rnet(input), target).backward()
        criterion(local(input), target).backward()
        rnet.step()
        optimizer.step()
    copy_back = rnet.to_local()
    assert type(copy_back) is Net
    for name, value in local.state_dict().items():
        assert torch.equal(copy_back.state_dict()[name], value), name
        assert torch.equal(rnet.fc3.weight.data, local.fc3.weight.data)
    rnet.delete()


@pytest.mark.parametrize(
    ("dropout", "optimizer", "args", "criterion"),
    [
        (0.25, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}, nn.CrossEntropyLoss(label_smoothing=0.1)),
        (0.0, torch.optim.Adam, {"lr": 0.01}, nn.CrossEntropyLoss()),
    ],
)
def test_residual_net_with_batchnorm_cat_and_dropout(
    gs: gradserve.Client, session_threads: int, dropout: float, optimizer: type, args: dict, criterion: nn.Module
) -> None:
    # A session of the user's own module starts its generator as torch.manual_seed(seed) leaves it, whichever
    # form the module travels in, so dropout draws the masks of a local loop after the same call.
    torch.manual_seed(0)
    net = CatNet()
    net.drop.p = dropout
    local = copy.deepcopy(net)
    rnet = gs.remote(net, optimizer, input_shape=[3, 8, 8], seed=3, **args)
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(4, 3, 8, 8, generator=g), torch.tensor([0, 3, 1, 4])
    local_optimizer = optimizer(local.parameters(), **args)
    for _ in range(2):
        out, want = rnet(x), local(x)
        assert torch.equal(out.fetch(), want)
        loss, local_loss = criterion(out, y), criterion(want, y)
        assert loss.item() == local_loss.item() and loss.grad_fn.name == local_loss.grad_fn.name()
        loss.backward()
        local_loss.backward()
        assert torch.equal(rnet.bn2.weight.grad, local.bn2.weight.grad)
        assert torch.equal(rnet.conv2.weight.grad, local.conv2.weight.grad)
        rnet.step()
        local_optimizer.step()
        rnet.zero_grad()
        local_optimizer.zero_grad()
    for name, value in local.state_dict().items():
        assert torch.equal(rnet.state_dict()[name], value), name
    assert torch.equal(rnet.bn1.running_var.data, local.bn1.running_var)


@pytest.mark.parametrize(("net", "node"), [(Branchy(), "gt"), (Sine(), "sin")])
def test_untraceable_module_fails_before_any_request(net: nn.Module, node: str) -> None:
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    with gradserve.Client("http://gradserve.invalid", transport=httpx.MockTransport(record)) as c:
        with pytest.raises(gradserve.SpecError, match=f"fx node '{node}'") as caught:
            c.remote(net, input_shape=[1, 32, 32] if isinstance(net, Net) else [4], format="spec")
        with pytest.raises(gradserve.SpecError):
            c.jobs.submit(
                net, {"source": "random", "num_classes": 3}, input_shape=[4], batch_size=4, steps=1, format="spec"
            )
        if isinstance(net, Branchy):  # an `if` on tensor values: torch.export refuses it too, at the first call
            with pytest.raises(gradserve.ExportError, match=r"torch\.export cannot capture Branchy"):
                c.remote(net)(torch.randn(2, 1, 32, 32))
    assert caught.value.node == node and sent == []
