"""How many PyTorch threads each worker process that ``gradserve up`` starts gets: the cores, split.

As torchrun does for the processes it starts, each worker gets its share of the cores through
``OMP_NUM_THREADS`` (here ``GRADSERVE_WORKER_THREADS``, which ``gradserve worker`` turns into it), so
the workers together never run more busy threads than there are cores: an OpenMP thread that spins
waiting for a sibling descheduled by another process is slower than no sibling at all (on a loaded
box, by tens of times for a small network). Above
two cores one is left to the API and Redis, which serve every call. Session workers, whose calls are
small and latency-bound, get an even share; job workers share the rest. Exactness is per thread
count: an answer says how many threads computed it (``threads``, also in /readyz per worker).
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as taskset or a container's cpuset sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_threads(cores: int, job_workers: int, session_workers: int) -> tuple[int, int]:
    """Threads for each job worker and for each session worker: together at most the cores (less one for
    the API and Redis above two), but never below one thread each."""
    usable = cores - 1 if cores > 2 else cores
    per_session = max(1, usable // max(1, job_workers + session_workers))
    per_job = max(1, (usable - session_workers * per_session) // max(1, job_workers))
    return per_job, per_session


def rank_threads(worker_threads: int, ranks: int) -> int:
    """Threads for each rank of a job of ``ranks`` processes on a job worker of ``worker_threads``: the
    ranks together run no more busy threads than the worker alone would (its share of the cores)."""
    return max(1, worker_threads // ranks)
