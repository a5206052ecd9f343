"""Real architectures through ``client.remote()``: nested CNNs, a TransformerEncoder, an LSTM read at
``out[:, -1]``, BERT, GPT-2 and a LoRA wrap go to the service as torch.export programs, and three training
steps there equal the same steps run locally, bit for bit: every loss and every state_dict entry."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import gradserve
from tests.conftest import API_KEYS, Service
from tests.zoo import ZOO, ZooCase

pytestmark = pytest.mark.integration


@pytest.fixture
def gs(service: Service) -> Iterator[gradserve.Client]:
    with gradserve.Client(service.url, api_key=API_KEYS["alice"]) as c:
        yield c


def _batch(case: ZooCase, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return case.inputs(g), case.targets(g)


@pytest.mark.parametrize("case", ZOO, ids=[c.name for c in ZOO])
def test_three_steps_equal_a_local_run(gs: gradserve.Client, session_threads: int, case: ZooCase) -> None:
    torch.manual_seed(0)
    model = case.make()
    local = copy.deepcopy(model)
    criterion = getattr(nn, case.criterion)()

    rnet = gs.remote(model, torch.optim.SGD, lr=0.01, momentum=0.9, seed=1, output=case.output)
    remote_losses = []
    for step in range(3):
        inputs, target = _batch(case, step)
        rnet.zero_grad()  # before the first forward too, as the idiomatic loop calls it
        loss = criterion(rnet(**inputs), target)
        loss.backward()
        rnet.step()
        remote_losses.append(loss.item())
    assert rnet.exported, f"{case.name} fits no catalogue spec, so it must travel as an exported program"

    torch.set_num_threads(session_threads)
    torch.manual_seed(1)  # the session's seed seeds its RNG (dropout), as here
    optimizer = torch.optim.SGD([p for p in local.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    local_losses = []
    for step in range(3):
        inputs, target = _batch(case, step)
        optimizer.zero_grad()
        out = local(**inputs)
        loss = criterion(out[case.output] if case.output else out, target)
        loss.backward()
        optimizer.step()
        local_losses.append(loss.item())

    assert remote_losses == local_losses
    remote_state, local_state = rnet.state_dict(), local.state_dict()
    assert list(remote_state) == list(local_state)  # the module's own order
    for name, value in local_state.items():
        assert torch.equal(remote_state[name], value), f"{case.name}: {name} differs"
    for name in case.frozen:  # frozen parameters: no grad, no update
        assert torch.equal(remote_state[name], model.state_dict()[name])
        assert rnet.parameter(name)["grad"] is None
    assert repr(rnet) == repr(model)
    rnet.delete()


def test_to_local_is_the_users_class_with_the_remote_weights(gs: gradserve.Client) -> None:
    case = next(c for c in ZOO if c.name == "resnet")
    torch.manual_seed(0)
    model = case.make()
    rnet = gs.remote(model, torch.optim.SGD, lr=0.1)
    inputs, target = _batch(case, 0)
    nn.CrossEntropyLoss()(rnet(**inputs), target).backward()
    rnet.step()
    local = rnet.to_local()
    assert type(local) is type(model)
    assert all(torch.equal(local.state_dict()[k], v) for k, v in rnet.state_dict().items())
    rnet.delete()


def test_a_network_exported_over_http_serves_any_batch(gs: gradserve.Client, service: Service) -> None:
    """The HTTP form: POST /v1/networks with the multipart parts, then a session at two batch sizes."""
    from gradserve.export_form import export_module

    case = next(c for c in ZOO if c.name == "bert")
    torch.manual_seed(0)
    model = case.make()
    inputs, _ = _batch(case, 0)
    upload = export_module(model, inputs, "logits")
    http = service.client("alice")
    network = http.post("/v1/networks", files=upload.files())
    assert network.status_code == 201, network.text
    body = network.json()
    assert body["format"] == "export" and body["repr"] == repr(model)
    assert body["output_shape"] == [3]
    session = http.post("/v1/sessions", json={"network_id": body["id"], "seed": 0})
    assert session.status_code == 201, session.text
    sid = session.json()["id"]
    for batch, length in ((1, 10), (3, 7)):
        ids = torch.randint(0, 100, (batch, length))
        answer = http.post(
            f"/v1/sessions/{sid}/forward",
            json={"inputs": {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()}},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["shape"] == [batch, 3]
    # The autograd graph of the last output: the nodes a local forward of the same model builds, parameters by name.
    graph = http.get(f"/v1/sessions/{sid}/graph", params={"root": "output", "max_nodes": 5000})
    assert graph.status_code == 200, graph.text
    nodes = graph.json()["nodes"]
    local = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    # The program's own nodes: every kind a local forward builds (export's functional form may add a few, e.g. an
    # in-place `+=` kept as its own AddBackward0), and the same root.
    remote_names, local_names = Counter(n["name"] for n in nodes), Counter(_autograd_names(local.grad_fn))
    assert set(remote_names) == set(local_names) and not local_names - remote_names
    assert nodes[0]["name"] == type(local.grad_fn).__name__
    params = {n["param"]["name"] for n in nodes if n.get("param")}
    assert params == {name for name, p in model.named_parameters() if p.requires_grad}
    missing = http.post(f"/v1/sessions/{sid}/forward", json={"inputs": {"input_ids": [[1, 2]]}})
    assert missing.status_code == 422 and "attention_mask" in missing.text
    single = http.post(f"/v1/sessions/{sid}/forward", json={"inputs": {"input_ids": [1, 2], "attention_mask": [1, 1]}})
    assert single.status_code == 422 and "unsqueeze(0)" in single.text


def test_train_eval_and_manual_seed_behave_as_in_pytorch(gs: gradserve.Client, session_threads: int) -> None:
    """Dropout and batch norm switch with train()/eval() (an exported network runs its eval program), and
    manual_seed gives the dropout masks a local run gets after the same call."""
    case = next(c for c in ZOO if c.name == "mobilenet")
    torch.manual_seed(0)
    model = case.make()
    local = copy.deepcopy(model)
    rnet = gs.remote(model)
    assert rnet.threads == session_threads  # known before the first forward
    rnet.manual_seed(7)  # before the session exists: applied as it starts
    inputs, _ = _batch(case, 0)
    torch.manual_seed(7)
    assert torch.equal(rnet(**inputs).fetch(), local(**inputs))
    rnet.manual_seed(11)
    torch.manual_seed(11)
    assert torch.equal(rnet(**inputs).fetch(), local(**inputs))
    rnet.eval()
    local.eval()
    with torch.no_grad():
        want = local(**inputs)
    first = rnet(**inputs).fetch()
    assert torch.equal(first, want) and torch.equal(rnet(**inputs).fetch(), first)  # no dropout, running stats
    rnet.train()
    local.train()
    torch.manual_seed(5)
    rnet.manual_seed(5)
    assert torch.equal(rnet(**inputs).fetch(), local(**inputs))
    rnet.delete()


def _autograd_names(root: object) -> list[str]:
    """Every node of a local autograd graph once, by its class name, as the service names them."""
    seen: dict[int, str] = {}
    stack = [root]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen[id(fn)] = type(fn).__name__
        stack.extend(f for f, _ in fn.next_functions)  # type: ignore[attr-defined]
    return list(seen.values())
