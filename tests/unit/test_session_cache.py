"""The session worker's cache of live sessions: least recently used first out, within a memory budget."""

from __future__ import annotations

import torch
from torch import nn

from worker.session_store import SessionCache, footprint
from worker.sessions import LiveSession


def live(sid: str, width: int) -> LiveSession:
    net = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width))
    return LiveSession(tenant="t", sid=sid, meta={}, device=torch.device("cpu"), net=net, optimizer=None, rng={})


def test_footprint_counts_weights_four_times_and_buffers_once() -> None:
    s = live("a", 10)
    weights = (10 * 10 + 10 + 10 + 10) * 4  # Linear's weight and bias, BatchNorm's weight and bias, float32
    buffers = (10 + 10) * 4 + 8  # running mean and var, and num_batches_tracked (int64)
    assert footprint(s) == 4 * weights + buffers


def test_the_least_recently_used_leave_first_and_the_one_in_use_stays() -> None:
    a, b, c = live("a", 16), live("b", 16), live("c", 16)
    cache = SessionCache(budget_bytes=2 * footprint(a))
    cache.put(a)
    cache.put(b)
    assert cache.get("t", "a") is a  # now b is the least recently used
    cache.put(c)
    assert (cache.get("t", "b"), cache.get("t", "a"), cache.get("t", "c")) == (None, a, c)
    assert cache.used == 2 * footprint(a)
    cache.put(a)  # the same object again: not counted twice
    assert cache.used == 2 * footprint(a) and len(cache) == 2
    cache.drop("t", "a")
    assert cache.used == footprint(c) and len(cache) == 1
    huge = live("huge", 64)
    cache.put(huge)  # over the budget on its own: kept, since it is the session being called
    assert len(cache) == 1 and cache.get("t", "huge") is huge


def test_a_forward_is_charged_to_its_session_and_pushes_others_out() -> None:
    """A session's cost was counted once, from its weights, when first cached: the input, saved weights
    and autograd graph of its forwards never were, and the cache grew past its budget."""
    from worker.sessions import ForwardRecord

    a, b = live("a", 16), live("b", 16)
    a.meta = {"activation_bytes_per_sample": 1000}
    cache = SessionCache(budget_bytes=3 * footprint(a))
    cache.put(a)
    cache.put(b)
    x = torch.randn(256, 16)
    a.fwd = ForwardRecord(x, {"cpu": torch.zeros(5056, dtype=torch.uint8)}, {}, params_stamp=1)
    a.fwd.output = a.net(x)  # live, with its graph
    grown = footprint(a)
    assert grown >= footprint(b) + x.numel() * 4 + 5056 + 1000 * 256
    cache.put(a)  # the same object, after its forward
    assert cache.used == grown and cache.get("t", "b") is None  # over the budget: b left


def test_deleted_sessions_leave_the_cache() -> None:
    a, b, c = live("a", 8), live("b", 8), live("c", 8)
    cache = SessionCache(budget_bytes=10 * footprint(a))
    for s in (a, b, c):
        cache.put(s)
    dropped = cache.prune(lambda ids: [sid != "b" for _, sid in ids])  # b was deleted
    assert dropped == 1 and cache.get("t", "b") is None and len(cache) == 2
    assert cache.used == footprint(a) + footprint(c)
