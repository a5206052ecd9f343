"""A trial's request from the template and its parameters; the space checked up front."""

from __future__ import annotations

from typing import Any

import pytest

from models.errors import InvalidInput
from models.spec.sweep import SweepCreate
from models.spec.sweep_space import apply_params, check_space, trial_template
from models.store.sweeps import best_trial

TEMPLATE: dict[str, Any] = {
    "network": {
        "input_shape": [64],
        "layers": [
            {"type": "Linear", "in_features": 64, "out_features": 32},
            {"type": "ReLU"},
            {"type": "Linear", "in_features": 32, "out_features": 10},
        ],
    },
    "dataset": {"source": "digits"},
    "criterion": {"type": "CrossEntropyLoss"},
    "optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.5},
    "batch_size": 32,
    "epochs": 3,
}


def sweep(space: dict[str, Any]) -> SweepCreate:
    return SweepCreate.model_validate({"template": TEMPLATE, "space": space})


def test_a_width_also_sets_the_next_linear_in_features() -> None:
    doc = apply_params(TEMPLATE, {"network.layers.0.out_features": 48})
    assert doc["network"]["layers"][0]["out_features"] == 48
    assert doc["network"]["layers"][2]["in_features"] == 48
    assert TEMPLATE["network"]["layers"][0]["out_features"] == 32  # the template is left alone


def test_a_new_optimizer_type_keeps_only_its_fields() -> None:
    doc = apply_params(TEMPLATE, {"optimizer.type": "Adam", "optimizer.lr": 0.01})
    assert doc["optimizer"] == {"type": "Adam", "lr": 0.01}


def test_a_default_field_can_be_searched() -> None:
    s = SweepCreate.model_validate(
        {
            "template": {**TEMPLATE, "optimizer": {"type": "SGD"}},
            "space": {"optimizer.momentum": {"type": "float", "low": 0, "high": 0.9}},
        }
    )
    assert trial_template(s)["optimizer"] == {"type": "SGD"}
    assert [r.optimizer.momentum for r in check_space(s)] == [0.0, 0.9]  # type: ignore[attr-defined]


LR = {"type": "float", "low": 0.1, "high": 0.5}


@pytest.mark.parametrize(
    ("space", "path"),
    [
        ({"optimizer.momentun": {"type": "float", "low": 0, "high": 1}}, "optimizer.momentun"),
        ({"lr_scheduler.gamma": {"type": "float", "low": 0.1, "high": 0.5}}, "lr_scheduler.gamma"),
        ({"network.layers.9.out_features": {"type": "int", "low": 1, "high": 2}}, "network.layers.9.out_features"),
        ({"optimizer.lr": {"type": "float", "low": 0.0, "high": 0.5}}, "optimizer.lr"),
        # the second path is at fault: the error names it, not the first
        (
            {
                "optimizer.lr": {"type": "float", "low": 0.1, "high": 0.5},
                "batch_size": {"type": "int", "low": 0, "high": 8},
            },
            "batch_size",
        ),
        (
            {
                "optimizer.lr": {"type": "float", "low": 0.1, "high": 0.5},
                "optimizer.lrr": {"type": "int", "low": 1, "high": 2},
            },
            "optimizer.lrr",
        ),
    ],
)
def test_a_bad_space_names_its_path(space: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_space(sweep(space))
    assert err.value.loc == ("body", "space", path)


def test_the_best_trial_follows_the_direction_and_skips_unfinished_ones() -> None:
    trials = [
        {"number": 0, "state": "complete", "value": 0.5},
        {"number": 1, "state": "pruned", "value": None},
        {"number": 2, "state": "complete", "value": 0.9},
        {"number": 3, "state": "running", "value": None},
    ]
    assert best_trial(trials, "maximize")["number"] == 2  # type: ignore[index]
    assert best_trial(trials, "minimize")["number"] == 0  # type: ignore[index]
    assert best_trial(trials[1:2], "maximize") is None


def test_the_direction_follows_the_metric_and_a_contrary_one_is_refused() -> None:
    from pydantic import ValidationError

    from models.spec.sweep import Objective

    assert Objective.model_validate({"metric": "val_loss"}).direction == "minimize"
    assert Objective.model_validate({}).direction == "maximize"
    with pytest.raises(ValidationError, match="worst trial"):
        Objective.model_validate({"metric": "val_loss", "direction": "maximize"})


def test_trial_seeds_are_far_apart_and_differ_between_sweeps() -> None:
    from api.sweep_optuna import trial_seed

    seeds = [trial_seed(s, n) for s in (0, 1) for n in range(50)]
    assert len(set(seeds)) == len(seeds)
    assert trial_seed(0, 1) != trial_seed(1, 0)  # seed 1 no longer replays seed 0 shifted by one
