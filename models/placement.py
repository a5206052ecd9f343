"""Where work runs: lanes, their queues, and the device → queue choice, for the API and the workers alike.

A lane is a kind of work with its own worker processes (training jobs; interactive session calls, which
must never wait behind a training step). Each lane has a CPU queue and a GPU queue; a worker consumes its
lane's CPU queue, and the GPU one too where it has CUDA. The API places work from what the workers'
heartbeats say (the list ``/readyz`` reads); the worker that takes it picks the device it runs on.
Everything here is pure: no Redis, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from models.errors import InvalidInput, ServiceUnavailable

QUEUE_CPU = "cpu"
QUEUE_GPU = "gpu"
QUEUE_SESSIONS_CPU = "sessions-cpu"
QUEUE_SESSIONS_GPU = "sessions-gpu"
LANE_JOBS = "jobs"
LANE_SESSIONS = "sessions"
LANE_QUEUES = {LANE_JOBS: (QUEUE_CPU, QUEUE_GPU), LANE_SESSIONS: (QUEUE_SESSIONS_CPU, QUEUE_SESSIONS_GPU)}
# A session call is answered while the client waits, so with no worker of the lane alive it is refused at
# once; a job waits in its queue for a worker to start.
NEEDS_A_LIVE_WORKER = frozenset({LANE_SESSIONS})
_NO_WORKER = {
    LANE_SESSIONS: "no session worker is alive to hold the session (`gradserve worker --lane sessions`); "
    "see GET /readyz"
}
_NO_GPU = {
    LANE_JOBS: "no worker with a CUDA device has been seen alive recently; use device 'auto' or 'cpu', "
    "or start a GPU worker",
    LANE_SESSIONS: 'no live session worker has a GPU (see GET /readyz); use "device": "cpu" or "auto"',
}


@dataclass(frozen=True)
class Placement:
    device: Literal["cpu", "cuda"]
    queue: str


def lane_queues(lane: str, *, gpu: bool) -> str:
    """The queues a worker of ``lane`` consumes, comma-separated: the GPU one only where CUDA is."""
    cpu_queue, gpu_queue = LANE_QUEUES[lane]
    return f"{cpu_queue},{gpu_queue}" if gpu else cpu_queue


def lanes_of(queues: list[str]) -> list[str]:
    """The lanes a worker consuming ``queues`` serves."""
    return [lane for lane, names in LANE_QUEUES.items() if any(q in names for q in queues)]


def place(lane: str, requested: str, workers: list[dict[str, Any]]) -> Placement:
    """The device and queue for work of ``lane`` asking for ``requested`` ("auto", "cpu" or "cuda"), among the
    live ``workers`` (their heartbeats: ``device`` and ``queues``): the lane's GPU queue when asked, or for
    "auto" when a live worker of the lane has CUDA and consumes it.

    Raises InvalidInput (on ``body.device``) when "cuda" is asked and no such worker is alive, rather than
    queueing forever; ServiceUnavailable when the lane needs a live worker and has none."""
    cpu_queue, gpu_queue = LANE_QUEUES[lane]
    if lane in NEEDS_A_LIVE_WORKER and not any(lane in lanes_of(w.get("queues", [])) for w in workers):
        raise ServiceUnavailable(_NO_WORKER[lane])
    gpu = any(w.get("device") == "cuda" and gpu_queue in w.get("queues", []) for w in workers)
    if requested == "cuda" and not gpu:
        raise InvalidInput(_NO_GPU[lane], ("body", "device"))
    if requested == "cuda" or (requested == "auto" and gpu):
        return Placement("cuda", gpu_queue)
    return Placement("cpu", cpu_queue)


def worker_device(requested: str, cuda_available: bool) -> Literal["cpu", "cuda"] | None:
    """The device a worker runs work on that asked for ``requested``: ``auto`` takes CUDA where this worker
    has it. None when "cuda" is asked of a worker without it (the caller says what that means for its work)."""
    if requested == "cuda" and not cuda_available:
        return None
    return "cuda" if requested == "cuda" or (requested == "auto" and cuda_available) else "cpu"
