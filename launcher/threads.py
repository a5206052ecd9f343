"""How many PyTorch threads each worker process that ``gradserve up`` starts gets: the cores, split.

As torchrun does for the processes it starts, each worker gets its share of the cores through
``OMP_NUM_THREADS`` (here ``GRADSERVE_WORKER_THREADS``, which ``gradserve worker`` turns into it), so
processes never run more busy threads than there are cores: OpenMP threads that spin-wait for a
sibling descheduled by another process made session calls 3x slower under load. Job workers share
the cores among themselves, because an idle session worker takes none and training is what needs
them; session workers, whose calls are small and latency-bound, split the cores with everyone.
Exactness is per thread count: an answer says how many threads computed it (``threads``).
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
    """Threads for each job worker and for each session worker."""
    per_job = max(1, cores // max(1, job_workers))
    per_session = max(1, cores // max(1, job_workers + session_workers))
    return per_job, per_session
