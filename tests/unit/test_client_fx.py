"""``gradserve.fx_spec``: a plain nn.Module traced into our spec builds, on the server's own builder, a
network that prints the same and computes the same numbers bit for bit; what it cannot express is
refused with the fx node named."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradserve.errors import SpecError
from gradserve.fx_spec import to_spec
from models.nn.build import build_network
from models.spec.network import NetworkSpec
from tests.lenet import LENET_SPEC, Net, ResBlock


class CatNet(nn.Module):
    """Residual with BatchNorm, torch.cat and the x.view(x.size(0), -1) idiom."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(a + self.bn2(self.conv2(a)))
        y = F.avg_pool2d(torch.cat([y, a], dim=1), 2)
        return self.fc(self.drop(y.view(y.size(0), -1)))


class SeqNet(nn.Module):
    """Embedding -> LSTM (first element of its tuple) -> methods on the tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.lstm = nn.LSTM(6, 5, batch_first=True)
        self.norm = nn.LayerNorm(5)
        self.out = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lstm(self.emb(x))[0]
        h = self.norm(h).mean(dim=1)
        return self.out(h.tanh()).log_softmax(dim=-1)


def _same_as_builder(net: nn.Module, x: torch.Tensor) -> dict:
    spec = to_spec(net, list(x.shape[1:]))
    built = build_network(NetworkSpec.model_validate(spec))
    built.load_state_dict(net.state_dict())
    assert repr(built) == repr(net)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        getattr(built, mode)()
        torch.manual_seed(3)
        want = net(x)
        torch.manual_seed(3)
        assert torch.equal(built(x), want), mode
    return spec


def test_lenet_traces_to_the_readme_spec() -> None:
    torch.manual_seed(0)
    spec = _same_as_builder(Net(), torch.randn(2, 1, 32, 32))
    assert [(lay["type"], lay.get("name")) for lay in spec["layers"]] == [
        (lay["type"], lay.get("name")) for lay in LENET_SPEC["layers"]
    ]
    assert spec["name"] == "Net" and "inputs" not in str(spec)


def test_a_top_level_sequential_keeps_its_numbered_children() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    spec = _same_as_builder(net, torch.randn(2, 1, 8, 8))
    assert spec["name"] == "Sequential" and [lay["name"] for lay in spec["layers"]] == ["0", "1", "2", "3"]
    torch.manual_seed(5)
    local = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    torch.manual_seed(5)
    built = build_network(NetworkSpec.model_validate(spec))
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), local.state_dict().values(), strict=True))


def test_residual_nets_with_batchnorm_and_cat() -> None:
    torch.manual_seed(0)
    spec = _same_as_builder(ResBlock(), torch.randn(2, 3, 8, 8))
    assert any(lay["type"] == "add" and len(lay["inputs"]) == 2 for lay in spec["layers"])
    spec = _same_as_builder(CatNet(), torch.randn(4, 3, 8, 8))
    assert next(lay for lay in spec["layers"] if lay["type"] == "cat")["dim"] == 1
    assert {"type": "flatten", "start_dim": 1} in spec["layers"]


def test_embedding_lstm_and_tensor_methods() -> None:
    torch.manual_seed(0)
    spec = _same_as_builder(SeqNet(), torch.randint(0, 20, (3, 7)))
    assert spec["input_dtype"] == "int64"
    assert next(lay for lay in spec["layers"] if lay["type"] == "LSTM")["select"] == 0


class Branchy(Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if x.sum() > 0:
            return F.relu(x)
        return x


class Sine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.fc(x))


class Upsampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv(x))


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x))


@pytest.mark.parametrize(
    ("net", "node", "op", "words"),
    [
        (Branchy(), "gt", "operator.gt", "Python bool"),
        (Sine(), "sin", "torch.sin", "not in the catalogue"),
        (Upsampler(), "up", "Upsample", "not in the catalogue"),
        (Nested(), "body_0", "Linear", "direct"),
        (Shared(), "fc_1", "Linear", "second time"),
    ],
)
def test_what_the_catalogue_cannot_express_names_the_node(net: nn.Module, node: str, op: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        to_spec(net)
    error = caught.value
    assert (error.node, error.op) == (node, op), str(error)
    assert f"fx node '{node}'" in str(error) and words in str(error) and "nearest supported op is" in str(error)


def test_an_argument_outside_the_catalogue_is_refused() -> None:
    class MaxNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 3, max_norm=1.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.emb(x)

    with pytest.raises(SpecError, match="max_norm"):
        to_spec(MaxNorm())


class LastStep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


def test_a_slice_is_named_as_the_cause_and_the_module_by_its_attribute() -> None:
    with pytest.raises(SpecError) as caught:
        to_spec(LastStep())
    text = str(caught.value)
    assert "indexes a tensor" in text and "(call_module self.fc)" in text
    assert "nearest supported op" not in text  # the input is at fault, not the Linear
