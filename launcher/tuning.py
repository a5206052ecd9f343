"""Process settings for long-lived training processes (workers, and the benchmark's bare loop)."""

from __future__ import annotations

import sys


def keep_freed_memory() -> None:
    """Stop glibc from handing a training step's freed activations back to the kernel.

    By default each step's multi-MB activations are mmapped and unmapped, or trimmed off the heap,
    and the next step faults the pages in again: ~1,000 page faults a step for LeNet at batch 64 in
    a worker, ~30 % of its step time. Fixed thresholds keep those blocks in the heap for reuse, as
    a long-lived training process wants.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 * 2**20)  # the largest glibc allows
    libc.mallopt(m_trim_threshold, 256 * 2**20)
