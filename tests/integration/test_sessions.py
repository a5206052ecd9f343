"""The PyTorch "Neural Networks" tutorial over HTTP, call by call, against the same code run locally.

Every number is compared with ``torch.equal``: the workers must give the local CPU run's bits.
"""

from __future__ import annotations

import httpx
import pytest
import torch
from torch import nn, optim

from tests.lenet import LENET_SPEC, Net

pytestmark = pytest.mark.usefixtures("session_threads")
SEED = 1234


def T(value: object) -> torch.Tensor:
    """A tensor from a response's nested list, decoded as the API's own codec decodes a request's."""
    return torch.tensor(value)


def new_session(client: httpx.Client, **extra: object) -> dict:
    body = {"network": LENET_SPEC, "seed": SEED, "device": "cpu", **extra}
    r = client.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def call(client: httpx.Client, sid: str, op: str, body: dict | None = None, status: int = 200) -> dict:
    r = client.post(f"/v1/sessions/{sid}/{op}", json=body if body is not None else {})
    assert r.status_code == status, r.text
    return r.json()


def param(client: httpx.Client, sid: str, name: str) -> dict:
    r = client.get(f"/v1/sessions/{sid}/parameters/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def assert_params_equal(client: httpx.Client, sid: str, net: nn.Module) -> None:
    for name, p in net.named_parameters():
        got = param(client, sid, name)
        assert torch.equal(T(got["data"]), p.detach()), name
        if p.grad is None:
            assert got["grad"] is None, name
        else:
            assert torch.equal(T(got["grad"]), p.grad), name


def test_the_tutorial_step_by_step_bit_exact(client: httpx.Client) -> None:
    torch.manual_seed(SEED)
    net = Net()
    # The session's optimizer is optim.SGD(net.parameters(), lr=0.01): building one changes nothing until step.
    session = new_session(client, optimizer={"type": "SGD", "lr": 0.01})
    sid = session["id"]

    # print(net); params = list(net.parameters()); print(len(params)); print(params[0].size())
    assert session["repr"] == repr(net)
    assert session["num_parameters"] == len(list(net.parameters())) == 10
    assert session["parameters"][0] == {"name": "conv1.weight", "shape": [6, 1, 5, 5], "numel": 150}
    assert session["device"] == "cpu"
    assert_params_equal(client, sid, net)

    # input = torch.randn(1, 1, 32, 32); out = net(input)
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    out = net(x)
    got = call(client, sid, "forward", {"input": x.tolist()})
    assert torch.equal(T(got["output"]), out)
    assert got["shape"] == [1, 10]
    assert got["grad_fn"] == type(out.grad_fn).__name__ == "AddmmBackward0"
    assert got["threads"] == torch.get_num_threads()  # the count the local run was given (session_threads)

    # net.zero_grad(); out.backward(torch.randn(1, 10))
    net.zero_grad()
    call(client, sid, "zero_grad")
    g = torch.randn(1, 10, generator=torch.Generator().manual_seed(2))
    out.backward(g)
    got = call(client, sid, "backward", {"gradient": g.tolist()})
    assert got["backward_from"] == "output"
    assert_params_equal(client, sid, net)

    # output = net(input); target = torch.randn(10).view(1, -1); loss = nn.MSELoss()(output, target)
    output = net(x)
    call(client, sid, "forward", {"input": x.tolist()})
    target = torch.randn(10, generator=torch.Generator().manual_seed(3)).view(1, -1)
    loss = nn.MSELoss()(output, target)
    got = call(client, sid, "loss", {"criterion": {"type": "MSELoss"}, "target": target.tolist()})
    assert torch.equal(torch.tensor(got["loss"]), loss.detach())
    assert got["grad_fn"] == "MseLossBackward0"

    # loss.grad_fn; .next_functions[0][0]; .next_functions[0][0].next_functions[0][0]
    graph = client.get(f"/v1/sessions/{sid}/graph").json()
    chain = _first_chain(graph, 3)
    assert [n["name"] for n in chain] == ["MseLossBackward0", "AddmmBackward0", "AccumulateGrad"]
    assert chain[2]["param"] == {"name": "fc3.bias", "shape": [10]}
    local_chain = [
        loss.grad_fn,
        loss.grad_fn.next_functions[0][0],
        loss.grad_fn.next_functions[0][0].next_functions[0][0],
    ]
    assert [type(f).__name__ for f in local_chain] == [n["name"] for n in chain]

    # net.zero_grad(); conv1.bias.grad before (None) and after backward
    net.zero_grad()
    call(client, sid, "zero_grad")
    assert param(client, sid, "conv1.bias")["grad"] is None
    loss.backward()
    call(client, sid, "backward")
    assert torch.equal(T(param(client, sid, "conv1.bias")["grad"]), net.conv1.bias.grad)

    # for f in net.parameters(): f.data.sub_(f.grad.data * learning_rate)
    learning_rate = 0.01
    for f in net.parameters():
        f.data.sub_(f.grad.data * learning_rate)
    call(client, sid, "sgd_update", {"lr": learning_rate})
    assert_params_equal(client, sid, net)

    # optimizer = optim.SGD(net.parameters(), lr=0.01); the training loop's one iteration
    optimizer = optim.SGD(net.parameters(), lr=0.01)
    optimizer.zero_grad()
    call(client, sid, "zero_grad")
    output = net(x)
    loss = nn.MSELoss()(output, target)
    loss.backward()
    optimizer.step()
    optimizer_step_remotely(client, sid, x, target, expected_loss=loss)
    assert_params_equal(client, sid, net)


def optimizer_step_remotely(
    client: httpx.Client, sid: str, x: torch.Tensor, target: torch.Tensor, *, expected_loss: torch.Tensor
) -> None:
    """forward -> MSE loss (checked bit for bit against the local one) -> backward -> step, on the service."""
    call(client, sid, "forward", {"input": x.tolist()})
    got = call(client, sid, "loss", {"criterion": {"type": "MSELoss"}, "target": target.tolist()})
    assert torch.equal(torch.tensor(got["loss"]), expected_loss.detach())
    call(client, sid, "backward")
    call(client, sid, "step")


def _first_chain(graph: dict, length: int) -> list[dict]:
    nodes = {n["id"]: n for n in graph["nodes"]}
    chain = [nodes[graph["root"]]]
    while len(chain) < length:
        first = next(e for e in graph["edges"] if e["source"] == chain[-1]["id"])  # edges keep next_functions order
        chain.append(nodes[first["target"]])
    return chain


@pytest.mark.parametrize(
    ("spec", "make"),
    [
        ({"type": "Adam", "lr": 0.001}, lambda ps: optim.Adam(ps, lr=0.001)),
        (
            {"type": "SGD", "lr": 0.05, "momentum": 0.9, "nesterov": True},
            lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
        ),
    ],
    ids=["Adam", "SGD-nesterov"],
)
def test_optimizer_state_kept_across_steps(client: httpx.Client, spec: dict, make) -> None:
    torch.manual_seed(SEED)
    net = Net()
    opt = make(net.parameters())
    sid = new_session(client, optimizer=spec)["id"]
    gen = torch.Generator().manual_seed(11)
    x, target = torch.randn(4, 1, 32, 32, generator=gen), torch.randn(4, 10, generator=gen)
    for _ in range(4):
        opt.zero_grad()
        loss = nn.MSELoss()(net(x), target)
        loss.backward()
        opt.step()
        call(client, sid, "zero_grad")
        optimizer_step_remotely(client, sid, x, target, expected_loss=loss)
    assert_params_equal(client, sid, net)


def test_gradients_accumulate_without_zero_grad(client: httpx.Client) -> None:
    torch.manual_seed(SEED)
    net = Net()
    sid = new_session(client)["id"]
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    g = torch.randn(2, 10, generator=torch.Generator().manual_seed(6))
    for _ in range(3):
        net(x).backward(g)
        call(client, sid, "forward", {"input": x.tolist()})
        call(client, sid, "backward", {"gradient": g.tolist()})
    assert_params_equal(client, sid, net)
    net.zero_grad(set_to_none=False)
    call(client, sid, "zero_grad", {"set_to_none": False})
    got = param(client, sid, "fc1.weight")
    assert got["grad"] is not None and not any(v for row in got["grad"] for v in row)


def test_session_via_network_id_and_info(client: httpx.Client) -> None:
    net_id = client.post("/v1/networks", json=LENET_SPEC).json()["id"]
    r = client.post("/v1/sessions", json={"network_id": net_id, "seed": SEED, "device": "auto"})
    assert r.status_code == 201, r.text
    session = r.json()
    assert session["network_id"] == net_id and session["device"] == "cpu"
    torch.manual_seed(SEED)
    assert torch.equal(T(param(client, session["id"], "fc3.weight")["data"]), Net().fc3.weight.detach())
    info = client.get(f"/v1/sessions/{session['id']}").json()
    assert info["id"] == session["id"] and info["version"] >= 1
    assert client.delete(f"/v1/sessions/{session['id']}").status_code == 204
    assert client.get(f"/v1/sessions/{session['id']}").status_code == 404
    assert client.post(f"/v1/sessions/{session['id']}/step").status_code == 404


def test_state_roundtrip_is_exact(client: httpx.Client) -> None:
    from safetensors.torch import load

    sid = new_session(client)["id"]
    blob = client.get(f"/v1/sessions/{sid}/state").content
    torch.manual_seed(SEED)
    reference = Net().state_dict()
    state = load(blob)
    assert sorted(state) == sorted(reference)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_put_state_loads_weights_exactly(client: httpx.Client) -> None:
    src, dst = new_session(client)["id"], new_session(client, seed=SEED + 1)["id"]
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(9))
    blob = client.get(f"/v1/sessions/{src}/state").content
    r = client.put(f"/v1/sessions/{dst}/state", content=blob, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    torch.manual_seed(SEED)
    out = Net()(x)
    assert torch.equal(T(call(client, dst, "forward", {"input": x.tolist()})["output"]), out)
