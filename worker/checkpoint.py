"""Which checkpoints a job keeps: the last K, plus every one whose step is a multiple of M (settings
``checkpoint_keep_last`` and ``checkpoint_keep_every``). Their bytes come from models.nn.state_codec.
"""

from __future__ import annotations


def to_drop(steps: list[int], keep_last: int, keep_every: int) -> list[int]:
    """The steps of ``steps`` (every checkpoint kept so far, the newest included) that retention drops."""
    ordered = sorted(set(steps))
    last = set(ordered[-keep_last:]) if keep_last > 0 else set()
    return [s for s in ordered if s not in last and not (keep_every > 0 and s % keep_every == 0)]
