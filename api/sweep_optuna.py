"""The Optuna side of a sweep: studies in the journal in our Redis, asks, reports, tells, importances.

Every function here blocks (Optuna is synchronous): the controller calls them in a thread.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalRedisBackend
from optuna.trial import TrialState

from models.spec.sweep import CategoricalParam, FloatParam, SweepCreate

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


def open_storage(redis_url: str, prefix: str) -> JournalStorage:
    return JournalStorage(JournalRedisBackend(redis_url, prefix=prefix))


def _pruner(sweep: SweepCreate) -> optuna.pruners.BasePruner:
    p = sweep.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    if p.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource or "auto", reduction_factor=p.reduction_factor
        )
    return optuna.pruners.NopPruner()


def study(storage: JournalStorage, name: str, sweep: SweepCreate) -> optuna.Study:
    """The sweep's study (created on first use); the pruner is ours, rebuilt from the request each time."""
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction=sweep.objective.direction,
        pruner=_pruner(sweep),
        load_if_exists=True,
    )


def distributions(sweep: SweepCreate) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for path, p in sweep.space.items():
        if isinstance(p, CategoricalParam):
            out[path] = CategoricalDistribution(p.choices)
        elif isinstance(p, FloatParam):
            out[path] = FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
        else:
            out[path] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
    return out


def trial_seed(sweep_seed: int, number: int) -> int:
    """The sampler's seed for one trial: a hash of (sweep seed, trial number). Seeding with
    ``sweep_seed + number`` gave neighbouring Mersenne Twister seeds, whose first draws are close (trial 3
    repeated trial 0 to two digits), and a sweep with seed 1 replayed seed 0's trials shifted by one."""
    digest = hashlib.blake2b(f"{sweep_seed}/{number}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def ask(s: optuna.Study, sweep: SweepCreate) -> tuple[int, dict[str, Any]]:
    """A new trial: (Optuna's trial number, its parameters). The sampler is seeded by the trial's number,
    so a sweep samples the same way whichever API process asks."""
    number = len(s.get_trials(deepcopy=False))
    s.sampler = optuna.samplers.TPESampler(seed=trial_seed(sweep.seed, number))
    trial = s.ask(fixed_distributions=distributions(sweep))
    return trial.number, trial.params


def report(s: optuna.Study, number: int, values: list[tuple[int, float]]) -> bool:
    """Report (epoch, value) pairs of a running trial; whether the pruner says to stop it."""
    trial_id = s.get_trials(deepcopy=False)[number]._trial_id
    trial = optuna.trial.Trial(s, trial_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a step reported twice (after a takeover) is ignored, as it should be
        for epoch, value in values:
            trial.report(value, epoch)
    return trial.should_prune()


def tell(s: optuna.Study, number: int, state: TrialState, value: float | None = None) -> None:
    if s.get_trials(deepcopy=False)[number].state.is_finished():
        return  # told already, by a process that died before recording it
    s.tell(number, value if state == TrialState.COMPLETE else None, state=state)


def importances(s: optuna.Study) -> dict[str, float] | None:
    """Optuna's parameter importances (fANOVA), once at least two trials completed with varied parameters."""
    if len(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return None
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(s).items()}
    except (RuntimeError, ValueError) as exc:  # e.g. every completed trial had the same parameters
        log.info("no importances yet: %s", exc)
        return None
