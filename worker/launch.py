"""A job of many processes on this worker: torch.distributed's elastic agent starts one ``worker.rank``
process per rank, and this process (the job worker) holds and renews the job's lease meanwhile.

The agent meets its ranks through a c10d rendezvous on a free loopback port (as ``torchrun
--standalone`` does), watches them, and tears the whole group down when one fails: then it starts the
group again (``max_restarts`` times), and the new ranks resume from the job's last checkpoint; metric
records of the steps they replay are dropped (``worker.recorder``), so each step is recorded once. Rank 0
records the job's outcome; a group that fails past its restarts is recorded failed here, naming the rank
that failed first, or the one that stopped answering (a collective timed out on the others).

A stopped rank (SIGSTOP, a debugger) cannot take the agent's SIGTERM: ``_Stopped`` kills it as soon as
its group is torn down, so the agent neither waits its 30 s for it nor leaves it behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
import torch
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from launcher.threads import rank_threads
from models.settings import Settings
from models.spec.job import Resources
from models.store.artifacts import shared_artifacts
from models.store.replies import opt_text
from worker.data_parallel import LEADER_ENDED, PEER_LOST
from worker.recorder import JobKeys, Lease, RedisHooks

log = logging.getLogger(__name__)
_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
_SHUTDOWN_S = 10  # a rank given SIGTERM as its group ends is killed after this (torch's default: 30)
_WATCH_S = 0.25


def run_group(client: redis.Redis, settings: Settings, jk: JobKeys, lease: Lease, resources: Resources) -> str:
    """Run the job's ranks to their end; return its final status as rank 0 recorded it, or "failed"."""
    ranks = resources.nodes * resources.processes_per_node
    restarts = settings.job_max_restarts if resources.max_restarts is None else resources.max_restarts
    timeout = resources.collective_timeout_s or settings.job_collective_timeout_s
    stopped = _Stopped(ranks)
    with tempfile.TemporaryDirectory(prefix="gradserve-ranks-") as logs, _own_signals(), stopped:
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=ranks,
            run_id=f"{jk.job_id}-{time.time_ns()}",
            rdzv_backend="c10d",
            rdzv_endpoint="127.0.0.1:0",  # a free port, as torchrun --standalone
            rdzv_configs={"is_host": True},
            max_restarts=restarts,
            monitor_interval=0.1,
            shutdown_timeout=_SHUTDOWN_S,
            logs_specs=DefaultLogsSpecs(log_dir=logs),
        )
        threads = rank_threads(torch.get_num_threads(), ranks)  # this worker's share of the cores, split
        args = ("-m", "worker.rank", jk.tenant, jk.job_id, lease.token, str(threads), str(os.getpid()))
        try:
            elastic_launch(config, sys.executable)(*args)
        except ChildFailedError as exc:
            rank, failure = _root_cause(exc)
            if failure.exitcode == LEADER_ENDED:  # rank 0 recorded the end itself (or Redis is away)
                return opt_text(client.hget(jk.job, "status")) or "missing"
            after = f" (after {restarts} restart{'s' * (restarts != 1)})" if restarts else ""
            hung = _hung(exc, ranks, stopped.pids)
            if hung is not None:
                error = f"rank {hung} of {ranks} stopped answering: a collective waited past {timeout:g} s{after}"
            else:
                error = f"rank {rank} of {ranks} failed: {_failure_text(failure)}{after}"
            return _failed(client, settings, jk, lease, error)
        except (SignalException, redis.RedisError):
            raise
        except Exception as exc:  # the agent itself (its rendezvous, starting the processes): the job, not the worker
            log.exception("job %s: the elastic agent failed", jk.job_id)
            error = f"its {ranks} processes could not run: {type(exc).__name__}: {exc}"
            return _failed(client, settings, jk, lease, error)
    return opt_text(client.hget(jk.job, "status")) or "missing"


def _failed(client: redis.Redis, settings: Settings, jk: JobKeys, lease: Lease, error: str) -> str:
    log.warning("job %s: %s", jk.job_id, error)
    artifacts = shared_artifacts(settings)
    hooks = RedisHooks(client, jk, lease, artifacts, ttl_s=settings.job_ttl_s, max_records=settings.job_max_records)
    # Refused (the lease is gone) where rank 0 recorded the outcome first: a non-finite loss, say.
    hooks.state("failed", final=True, finished_at=time.time(), error=error)
    return "failed"


def _root_cause(exc: ChildFailedError) -> tuple[int, ProcessFailure]:
    """The failure that broke the group: not a rank that only saw a peer go (``PEER_LOST``), if another
    failed; of those, the earliest."""
    causes = {r: f for r, f in exc.failures.items() if f.exitcode != PEER_LOST} or exc.failures
    if any(f.exitcode == LEADER_ENDED for f in causes.values()):  # the others were stopped after it ended
        causes = {r: f for r, f in causes.items() if f.exitcode == LEADER_ENDED}
    rank = min(causes, key=lambda r: (causes[r].timestamp, r))
    return rank, causes[rank]


def _hung(exc: ChildFailedError, ranks: int, stopped: dict[int, int]) -> int | None:
    """The rank the others timed out on: one seen stopped (and so killed here), else, where every rank that
    failed only lost a peer, the first that had not failed (it was still stuck in or before the collective)."""
    seen = [rank for rank, f in exc.failures.items() if f.pid in stopped]
    if seen:
        return min(seen)
    if any(f.exitcode != PEER_LOST for f in exc.failures.values()):
        return None
    silent = set(range(ranks)) - set(exc.failures)
    return min(silent) if silent else None


class _Stopped:
    """A thread that watches this process's rank processes while a group runs: one found stopped (state T)
    is remembered (pid -> rank), and killed once a sibling has ended (the group is being torn down)."""

    def __init__(self, ranks: int) -> None:
        self.world, self.pids = ranks, dict[int, int]()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gradserve-stopped-ranks", daemon=True)

    def __enter__(self) -> _Stopped:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(_WATCH_S):
            children = _rank_children(os.getpid())
            for pid, (state, rank) in children.items():
                if state != "T":
                    continue
                self.pids[pid] = rank
                if sum(s not in "ZX" for s, _ in children.values()) < self.world:
                    log.warning("rank %d (pid %d) is stopped while its group ends: killed", rank, pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def _rank_children(parent: int) -> dict[int, tuple[str, int]]:
    """This process's ``worker.rank`` children: pid -> (state letter, RANK)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]  # the command name before may hold anything
            if int(ppid) != parent or b"worker.rank" not in Path(entry.path, "cmdline").read_bytes():
                continue
            env = Path(entry.path, "environ").read_bytes().split(b"\0")
            rank = next(int(v[5:]) for v in env if v.startswith(b"RANK="))
        except (OSError, ValueError, StopIteration):  # gone meanwhile, or not started yet
            continue
        found[int(entry.name)] = (state, rank)
    return found


def _failure_text(failure: ProcessFailure) -> str:
    message: Any = failure.message
    if isinstance(message, dict):  # from the rank's error file (worker.rank's @record): "Type: text"
        return str(message.get("message", "")).strip().split("\n")[0] or f"exit code {failure.exitcode}"
    if failure.exitcode < 0:
        return f"killed by {failure.signal_name()}"
    if failure.exitcode == PEER_LOST:
        return "it lost a peer"
    return f"exit code {failure.exitcode}"  # no error file: torch's message would only say how to get one


@contextlib.contextmanager
def _own_signals() -> Iterator[None]:
    """The agent takes SIGTERM and friends while it runs (to stop its ranks, then raise); afterwards this
    worker's own handlers are back, and a signal that stopped the group is handed on to them."""
    if threading.current_thread() is not threading.main_thread():  # the agent then leaves signals alone too
        yield
        return
    saved = {name: signal.getsignal(getattr(signal, name)) for name in _SIGNALS}
    caught: SignalException | None = None
    try:
        yield
    except SignalException as exc:
        caught = exc
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)
    if caught is not None:
        # The job stays running under a lease nobody renews: it lapses and the job resumes elsewhere.
        signal.raise_signal(caught.sigval)
        raise RuntimeError(f"the job's ranks were stopped by {caught.sigval.name}") from caught
