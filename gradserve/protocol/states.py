"""Every state a job, a sweep and a sweep's trial can be in, and which of them are ends.

A session has no state of its own: it exists until it is closed or expires, and then answers 404.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # a breakpoint held; it is resumed or cancelled
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PRUNED = "pruned"  # a sweep's pruner stopped the trial


class SweepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"
    FAILED = "failed"


class TrialState(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A job in one of these never moves again.
JOB_TERMINAL: frozenset[str] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PRUNED})
# Where nothing runs until someone acts: a wait or an event stream ends here as at an end.
JOB_STOPPED: frozenset[str] = JOB_TERMINAL | {JobStatus.PAUSED}
SWEEP_TERMINAL: frozenset[str] = frozenset({SweepStatus.SUCCEEDED, SweepStatus.CANCELLED, SweepStatus.FAILED})
TRIAL_ENDED: frozenset[str] = frozenset(TrialState) - {TrialState.RUNNING}


def public_states() -> dict[str, dict[str, list[str]]]:
    """The states as the dashboard reads them (``GET /protocol``): each kind's states in order, and its ends."""

    def values(states: frozenset[str]) -> list[str]:
        return sorted(str(s) for s in states)

    return {
        "job": {
            "states": [s.value for s in JobStatus],
            "terminal": values(JOB_TERMINAL),
            "stopped": values(JOB_STOPPED),
        },
        "sweep": {"states": [s.value for s in SweepStatus], "terminal": values(SWEEP_TERMINAL)},
        "trial": {"states": [s.value for s in TrialState], "terminal": values(TRIAL_ENDED)},
    }
