"""The builder against hand-written modules: repr, parameters, seeded weights, outputs."""

from __future__ import annotations

import pytest
import torch

from models.errors import InvalidInput
from models.nn.build import build_network, validate_network
from models.settings import Settings
from models.spec.network import NetworkSpec
from tests.lenet import LENET_SPEC, RESIDUAL_SPEC, Net, ResBlock


@pytest.fixture(scope="module")
def lenet_spec() -> NetworkSpec:
    return NetworkSpec.model_validate(LENET_SPEC)


def test_lenet_repr_is_print_net(lenet_spec: NetworkSpec) -> None:
    summary = validate_network(lenet_spec, Settings())
    assert summary.repr == repr(Net())
    assert summary.repr.startswith("Net(\n  (conv1): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))")


def test_lenet_parameters(lenet_spec: NetworkSpec) -> None:
    summary = validate_network(lenet_spec, Settings())
    expected = [(n, list(p.shape)) for n, p in Net().named_parameters()]
    assert [(p["name"], p["shape"]) for p in summary.parameters] == expected
    assert summary.num_parameters == 10
    assert summary.parameters[0] == {"name": "conv1.weight", "shape": [6, 1, 5, 5], "numel": 150}
    assert summary.num_elements == sum(p.numel() for p in Net().parameters())
    assert summary.output_shape == [10]


@pytest.mark.parametrize("seed", [0, 1, 7, 1234, 2**31 - 1])
def test_lenet_seeded_weights_and_output_equal(lenet_spec: NetworkSpec, seed: int) -> None:
    torch.manual_seed(seed)
    reference = Net()
    torch.manual_seed(seed)
    built = build_network(lenet_spec)
    for (name_a, a), (name_b, b) in zip(reference.state_dict().items(), built.state_dict().items(), strict=True):
        assert name_a == name_b
        assert torch.equal(a, b), name_a
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(reference(x), built(x))


def test_residual_dag_matches_hand_written() -> None:
    spec = NetworkSpec.model_validate(RESIDUAL_SPEC)
    summary = validate_network(spec, Settings())
    assert summary.repr == repr(ResBlock())
    torch.manual_seed(5)
    reference = ResBlock()
    torch.manual_seed(5)
    built = build_network(spec)
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(reference(x), built(x))
    assert torch.equal(reference.bn.running_mean, built.bn.running_mean)


def test_validation_allocates_nothing_for_huge_networks() -> None:
    spec = NetworkSpec.model_validate(
        {"input_shape": [100_000], "layers": [{"type": "Linear", "in_features": 100_000, "out_features": 100_000}]}
    )
    with pytest.raises(InvalidInput, match="parameters; the limit is"):
        validate_network(spec, Settings())


def test_unnamed_modules_get_stable_names() -> None:
    spec = NetworkSpec.model_validate(
        {"input_shape": [4], "layers": [{"type": "Linear", "in_features": 4, "out_features": 2}, {"type": "ReLU"}]}
    )
    net = build_network(spec)
    assert [n for n, _ in net.named_children()] == ["linear_0", "relu_1"]


def test_network_classes_do_not_pile_up_one_per_name() -> None:
    """Each distinct network name made a class kept for the process's life, refused requests' too
    (20k names held 44 MB in the API); only the most recently used are kept."""
    import gc
    import weakref

    from models.nn import build

    def probe(name: str) -> NetworkSpec:
        layer = {"name": "fc", "type": "Linear", "in_features": 3, "out_features": 2}
        return NetworkSpec.model_validate({"name": name, "input_shape": [3], "layers": [layer]})

    first = weakref.ref(type(build_network(probe("Early0"))))
    again = type(build_network(probe("Kept")))
    for i in range(3 * build.NET_CLASSES_KEPT):
        with torch.device("meta"):
            build_network(probe(f"Early{i + 1}"))
        assert type(build_network(probe("Kept"))) is again  # one in use stays the same class
    gc.collect()
    assert len(build._CLASSES) <= build.NET_CLASSES_KEPT
    assert first() is None
