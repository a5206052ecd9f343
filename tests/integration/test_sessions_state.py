"""Session state across calls, workers and worker deaths: BatchNorm statistics, dropout masks, replayed graphs."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
import torch
from torch import nn, optim

from models.nn.build import build_network
from models.spec.network import NetworkSpec
from tests.conftest import Service
from tests.integration.test_sessions import SEED, T, assert_params_equal, call, new_session, param
from tests.lenet import LENET_SPEC, RESIDUAL_SPEC, Net, ResBlock

pytestmark = pytest.mark.usefixtures("session_threads")

DROPOUT_SPEC = {
    "name": "Drop",
    "input_shape": [8],
    "layers": [
        {"name": "fc1", "type": "Linear", "in_features": 8, "out_features": 32},
        {"name": "drop", "type": "Dropout", "p": 0.5},
        {"type": "relu"},
        {"type": "dropout", "p": 0.25},
        {"name": "fc2", "type": "Linear", "in_features": 32, "out_features": 3},
    ],
}


def _buffers_equal(client: httpx.Client, sid: str, net: nn.Module) -> None:
    for name, b in net.named_buffers():
        got = param(client, sid, name)
        assert got["kind"] == "buffer"
        assert torch.equal(torch.tensor(got["data"], dtype=b.dtype), b), name


def test_batchnorm_dag_keeps_running_stats(client: httpx.Client) -> None:
    torch.manual_seed(SEED)
    net = ResBlock()
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sid = new_session(client, network=RESIDUAL_SPEC, optimizer={"type": "SGD", "lr": 0.1, "momentum": 0.9})["id"]
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        x, y = torch.randn(5, 3, 8, 8, generator=gen), torch.randint(0, 4, (5,), generator=gen)
        opt.zero_grad()
        out = net(x)
        loss = nn.CrossEntropyLoss()(out, y)
        loss.backward()
        opt.step()
        call(client, sid, "zero_grad")
        assert torch.equal(T(call(client, sid, "forward", {"input": x.tolist()})["output"]), out)
        got = call(client, sid, "loss", {"criterion": {"type": "CrossEntropyLoss"}, "target": y.tolist()})
        assert torch.equal(torch.tensor(got["loss"]), loss.detach())
        call(client, sid, "backward")
        call(client, sid, "step")
    assert_params_equal(client, sid, net)
    _buffers_equal(client, sid, net)
    assert param(client, sid, "bn.num_batches_tracked")["data"] == 3


def test_dropout_masks_follow_the_seeded_rng(client: httpx.Client) -> None:
    spec = NetworkSpec.model_validate(DROPOUT_SPEC)
    torch.manual_seed(SEED)
    net = build_network(spec)
    sid = new_session(client, network=DROPOUT_SPEC)["id"]
    gen = torch.Generator().manual_seed(8)
    for _ in range(4):
        x, g = torch.randn(6, 8, generator=gen), torch.randn(6, 3, generator=gen)
        out = net(x)
        out.backward(g)
        assert torch.equal(T(call(client, sid, "forward", {"input": x.tolist()})["output"]), out)
        call(client, sid, "backward", {"gradient": g.tolist()})
    assert_params_equal(client, sid, net)


def _kill_all_workers(service: Service) -> None:
    """Every session worker, so that none holds a live graph."""
    old = {w["pid"] for w in service.wait_workers(2, lane="sessions")}
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    service.wait_workers(2, exclude_pids=old, lane="sessions")


def test_worker_killed_between_forward_and_backward(service: Service, client: httpx.Client) -> None:
    """No worker holds the live graph any more: the backward replays the forward, BatchNorm and all."""
    torch.manual_seed(SEED)
    lenet = Net()
    torch.manual_seed(SEED)
    res = ResBlock()
    s_lenet = new_session(client)["id"]
    s_res = new_session(client, network=RESIDUAL_SPEC)["id"]
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(30))
    xr = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(31))
    target = torch.randn(2, 10, generator=torch.Generator().manual_seed(32))
    g = torch.randn(3, 4, generator=torch.Generator().manual_seed(33))

    loss = nn.MSELoss()(lenet(x), target)
    call(client, s_lenet, "forward", {"input": x.tolist()})
    call(client, s_lenet, "loss", {"criterion": {"type": "MSELoss"}, "target": target.tolist()})
    res(xr).backward(g)
    call(client, s_res, "forward", {"input": xr.tolist()})

    _kill_all_workers(service)

    loss.backward()
    call(client, s_lenet, "backward")
    call(client, s_res, "backward", {"gradient": g.tolist()})
    assert_params_equal(client, s_lenet, lenet)
    assert_params_equal(client, s_res, res)
    _buffers_equal(client, s_res, res)  # replayed from the pre-forward statistics, so updated once, not twice
    graph = client.get(f"/v1/sessions/{s_lenet}/graph").json()
    assert graph["nodes"][0]["name"] == "MseLossBackward0"


def test_concurrent_calls_on_one_session_are_serialised(service: Service) -> None:
    """Twelve backward calls in flight at once: none is lost, as two workers racing on one state would lose some."""
    torch.manual_seed(SEED)
    net = Net()
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(40))
    g = torch.randn(1, 10, generator=torch.Generator().manual_seed(41))
    out = net(x)
    for _ in range(12):
        out.backward(g, retain_graph=True)

    async def run() -> None:
        headers = {"Authorization": f"Bearer {service.keys['alice']}"}
        async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=120) as c:
            r = await c.post("/v1/sessions", json={"network": LENET_SPEC, "seed": SEED, "device": "cpu"})
            sid = r.json()["id"]
            assert (await c.post(f"/v1/sessions/{sid}/forward", json={"input": x.tolist()})).status_code == 200
            body = {"gradient": g.tolist(), "retain_graph": True}
            replies = await asyncio.gather(*(c.post(f"/v1/sessions/{sid}/backward", json=body) for _ in range(12)))
            assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
            for name, p in net.named_parameters():
                got = (await c.get(f"/v1/sessions/{sid}/parameters/{name}")).json()
                assert torch.equal(T(got["grad"]), p.grad), name

    asyncio.run(run())


def test_graph_formats(client: httpx.Client) -> None:
    sid = new_session(client)["id"]
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(50))
    call(client, sid, "forward", {"input": x.tolist()})
    out_graph = client.get(f"/v1/sessions/{sid}/graph").json()
    assert out_graph["of"] == "output" and out_graph["nodes"][0]["name"] == "AddmmBackward0"
    call(client, sid, "loss", {"criterion": {"type": "MSELoss"}, "target": [[0.0] * 10]})
    graph = client.get(f"/v1/sessions/{sid}/graph").json()
    assert graph["of"] == "loss" and not graph["truncated"]
    params = {n["param"]["name"]: n["param"]["shape"] for n in graph["nodes"] if n["name"] == "AccumulateGrad"}
    assert params == {n: list(p.shape) for n, p in Net().named_parameters()}
    assert graph["nodes"][1]["saved"]["mat1"] == {"shape": [1, 84], "dtype": "float32"}
    small = client.get(f"/v1/sessions/{sid}/graph", params={"max_nodes": 3}).json()
    assert small["truncated"] and len(small["nodes"]) == 3
    dot = client.get(f"/v1/sessions/{sid}/graph", params={"format": "dot"})
    assert dot.headers["content-type"].startswith("text/vnd.graphviz")
    assert dot.text.startswith('digraph "Net"') and "fc3.bias [10]" in dot.text
    svg = client.get(f"/v1/sessions/{sid}/graph", params={"format": "svg"})
    if svg.status_code == 503:  # Graphviz absent on this machine: said plainly, never a 500
        assert "Graphviz" in svg.json()["detail"]
    else:
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml" and "<svg" in svg.text
