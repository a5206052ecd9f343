"""A fork's first start: the parent's state at the fork step, with the changes the fork asked for.

What the API decided at fork time (the ``policy`` dict of ``api.routes.job_fork``) says what carries over. An unchanged
optimizer and scheduler carry all their state, which is what makes a no-change fork repeat its parent bit
for bit. Changed hyper-parameters of the same optimizer replace the values in its param groups (a new
``lr`` also becomes the scheduler's base rate); an optimizer of another type, and a new, changed or
removed scheduler, start fresh at the fork from the optimizer spec's ``lr``.
"""

from __future__ import annotations

from typing import Any

from models.nn.objectives import build_scheduler
from models.nn.state_codec import TrainState
from models.spec.job import JobCreate
from worker.engine import Trainer


def start_fork(trainer: Trainer, state: TrainState, policy: dict[str, Any], req: JobCreate) -> None:
    keep_optimizer = policy["optimizer"] != "fresh"
    keep_scheduler = policy["scheduler"] == "keep"
    trainer.load_state(state, optimizer=keep_optimizer, scheduler=keep_scheduler)
    if policy.get("data") == "fresh":  # another dataset: its first epoch begins at the fork
        trainer.cursor, trainer.order = 0, None
    groups = trainer.optimizer.param_groups
    overrides = dict(policy.get("overrides", {}))
    for group in groups:
        for key, value in overrides.items():
            group[key] = tuple(value) if isinstance(group.get(key), tuple) else value
        if "lr" in overrides:
            group["initial_lr"] = overrides["lr"]
    if trainer.scheduler is not None and keep_scheduler and "lr" in overrides:
        trainer.scheduler.base_lrs = [overrides["lr"]] * len(groups)
    if not keep_scheduler:  # a new, changed or removed scheduler: the rate starts again from the spec's
        for group in groups:
            group["lr"] = req.optimizer.lr
            group.pop("initial_lr", None)  # else a new scheduler would take the parent's as its base
        spec = req.lr_scheduler
        trainer.scheduler = None if spec is None else build_scheduler(spec, trainer.optimizer, trainer.cfg.total_steps)
