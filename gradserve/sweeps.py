"""Sweeps from Python: ``client.sweeps.create(template, space, ...)`` gives a ``Sweep`` to watch (a live
table of its trials), wait on, read the best trial of, or cancel. Each trial is an ordinary job:
``sweep.job(trial)`` is a ``Job`` to read metrics and checkpoints from."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gradserve.errors import GradserveError, SweepEnded
from gradserve.jobs import Job, Jobs
from gradserve.protocol.states import SWEEP_TERMINAL

if TYPE_CHECKING:
    from rich.console import Console

    from gradserve.transport import Transport

POLL_S = 1.0  # a sweep's trials last seconds to hours: once a second is live enough for a table


def sweep_body(
    template: dict[str, Any] | Job,
    space: dict[str, Any],
    *,
    objective: str | dict[str, Any] = "val_accuracy",
    max_trials: int = 10,
    parallelism: int = 1,
    pruner: str | dict[str, Any] = "median",
    name: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The ``POST /v1/sweeps`` body. ``template``: a job request (or a ``Job``, whose request is reused);
    ``objective``: ``"val_accuracy"`` (maximized) or ``"val_loss"`` (minimized), or the full dict."""
    if isinstance(template, Job):
        template = template.request()
    if isinstance(objective, str):
        objective = {"metric": objective, "direction": "minimize" if objective.endswith("loss") else "maximize"}
    body: dict[str, Any] = {
        "template": template,
        "space": space,
        "objective": objective,
        "max_trials": max_trials,
        "parallelism": parallelism,
        "pruner": {"type": pruner} if isinstance(pruner, str) else pruner,
    }
    if name is not None:
        body["name"] = name
    if seed is not None:  # else the service draws one, and the sweep's GET says which
        body["seed"] = seed
    return body


class Sweep:
    """A sweep on the service; ``last`` is its latest document (status, trials, best, importances)."""

    def __init__(self, client: Transport, sweep_id: str) -> None:
        self._client = client
        self.id = sweep_id
        self.last: dict[str, Any] = {}

    def refresh(self) -> dict[str, Any]:
        """``GET /v1/sweeps/{id}``."""
        self.last = self._client.request("GET", f"/v1/sweeps/{self.id}").json()
        return self.last

    @property
    def status(self) -> str:
        return str(self.refresh()["status"])

    @property
    def trials(self) -> list[dict[str, Any]]:
        trials: list[dict[str, Any]] = self.refresh()["trials"]
        return trials

    @property
    def best(self) -> dict[str, Any] | None:
        """The best complete trial so far (its ``job_id``, ``params``, ``value``), or None."""
        best: dict[str, Any] | None = self.refresh()["best"]
        return best

    def job(self, trial: dict[str, Any] | int | None) -> Job:
        """A trial's job (by trial document or number)."""
        if trial is None:  # sweep.job(sweep.best) before any trial completed
            raise GradserveError(f"no trial given: sweep {self.id} has no complete trial yet")
        if isinstance(trial, int):
            trial = next(t for t in self.last.get("trials") or self.trials if t["number"] == trial)
        if trial["job_id"] is None:
            raise GradserveError(f"trial {trial['number']} has no job: {trial.get('error')}")
        return Jobs(self._client).get(trial["job_id"])

    def wait(self, timeout: float | None = None, *, check: bool = True) -> dict[str, Any]:
        """Block until the sweep ends; ``SweepEnded`` if it was cancelled or failed (unless ``check=False``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (doc := self.refresh())["status"] not in SWEEP_TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {self.id} still {doc['status']} after {timeout} s")
            time.sleep(POLL_S)
        if check and doc["status"] != "succeeded":
            raise SweepEnded(doc)
        return doc

    def watch(self, console: Console | None = None, *, poll_s: float = POLL_S) -> dict[str, Any]:
        """Follow the sweep live: a table of its trials on a terminal, a line per trial change otherwise;
        returns its final document."""
        from gradserve.sweep_view import watch

        return watch(self, console, poll_s)

    def cancel(self) -> dict[str, Any]:
        """Start no more trials and cancel the running ones."""
        answer: dict[str, Any] = self._client.request("POST", f"/v1/sweeps/{self.id}/cancel").json()
        return answer

    def delete(self) -> None:
        """Forget an ended sweep (its trials stay, as the jobs they are)."""
        self._client.request("DELETE", f"/v1/sweeps/{self.id}")

    def __repr__(self) -> str:
        return f"Sweep('{self.id}', status={self.last.get('status', '?')!r})"


class Sweeps:
    def __init__(self, client: Transport) -> None:
        self._client = client

    def create(self, template: dict[str, Any] | Job, space: dict[str, Any], **options: Any) -> Sweep:
        """Start a sweep: ``create(template, {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.3,
        "log": True}}, objective="val_accuracy", max_trials=12, parallelism=2, pruner="median")``."""
        return self.create_body(sweep_body(template, space, **options))

    def create_body(self, body: dict[str, Any]) -> Sweep:
        """Start a sweep from a ready ``POST /v1/sweeps`` body (what ``gradserve sweeps create FILE`` sends)."""
        sweep = Sweep(self._client, self._client.request("POST", "/v1/sweeps", json=body).json()["id"])
        sweep.last = {"id": sweep.id, "status": "running", "trials": [], "best": None}
        return sweep

    def get(self, sweep_id: str) -> Sweep:
        sweep = Sweep(self._client, sweep_id)
        sweep.refresh()
        return sweep

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """The tenant's sweeps, newest first, each with its trial count and best value so far."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        data: list[dict[str, Any]] = self._client.request("GET", "/v1/sweeps", params=params).json()["data"]
        return data
