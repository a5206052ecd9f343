"""Session state in Redis, split into parts, and the worker's cache of live sessions.

The session hash (``Keys.session``) holds ``meta`` and ``queue`` (written once), ``version``,
``stamps`` (the version at which each part was last written) and one field per part:

    params, buffers, grads, optim, rng   the tutorial's ``net`` and ``optimizer`` (safetensors)
    fwd        the last forward's input, pre-forward RNG state and buffers: enough to replay it
    fwd_params the weights that forward used, kept once a step changes them
    loss       the last criterion and target
    graph      {"freed": bool, "training": bool}: whether a backward without retain_graph already ran, and
               the mode (``net.train()`` / ``net.eval()``) the next forward runs in
    fixed      an exported network's non-persistent buffers and lifted constants (written once)

A call writes only the parts it changed, so a forward writes a few kilobytes. A worker keeps the
sessions it served in memory; on the next call it compares stamps and reads only the parts another
worker changed since, so calls that alternate between workers stay cheap.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
import torch

from models.errors import Conflict, NotFound, ServiceUnavailable
from models.nn import state_codec
from models.settings import Settings
from models.store.keys import Keys
from models.store.replies import opt_bytes
from models.wire.session import heartbeat_stale
from worker.lock_release import RELEASE
from worker.session_inputs import batch_size
from worker.sessions import ForwardRecord, LiveSession, LossRecord, build_live

PARTS = ("params", "buffers", "grads", "optim", "rng", "fwd", "fwd_params", "loss", "graph")
log = logging.getLogger("gradserve.sessions")

# Claim the call's attempt, then take the session's lock and say where it stands, in one round trip:
# -3 the attempt is another's (the API gave up on it), -1 no such session, -4 the call was applied
# already (its recorded answer follows), -2 busy (the holder follows), else the version and stamps.
ACQUIRE = """
if not redis.call('set', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) and redis.call('get', KEYS[3]) ~= ARGV[3] then
  return {-3, false}
end
local v = redis.call('hget', KEYS[1], 'version')
if not v then return {-1, false} end
if ARGV[5] == '1' then
  local rec = redis.call('hmget', KEYS[4], 'frame', 'op')
  if rec[1] then return {-4, rec[1], rec[2]} end
end
local held = redis.call('get', KEYS[2])
if held and held ~= ARGV[1] then return {-2, held} end
redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {tonumber(v), redis.call('hget', KEYS[1], 'stamps')}
"""
CLAIM = "return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('get', KEYS[1]) == ARGV[1]"
STEAL = """
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0
"""


class Abandoned(Exception):
    """The API gave up on this attempt of the call before a worker took it: it must not run."""


@dataclass(frozen=True)
class Recorded:
    """The call was applied already (a retry or a redelivery): its answer as first given."""

    frame: bytes


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def footprint(s: LiveSession) -> int:
    """Bytes a live session holds, estimated: its weights, their grads and two optimizer moments (Adam's),
    its buffers, and what its last forward and loss keep: the input, the states a replay starts from, the
    weights it used, and its live autograd graph's saved activations (as admission estimated them)."""
    total = 4 * _nbytes(s.net.parameters()) + _nbytes(s.net.buffers())
    rec = s.fwd
    if rec is not None:
        total += _nbytes(rec.input.values() if isinstance(rec.input, dict) else [rec.input])
        total += _nbytes(rec.rng_before.values()) + _nbytes(rec.buffers_before.values())
        total += _nbytes((rec.params_at_forward or {}).values())
        if rec.output is not None:
            total += int(s.meta.get("activation_bytes_per_sample", 0)) * batch_size(rec.input)
    if s.loss is not None:
        total += _nbytes([s.loss.target])
    return total


class SessionCache:
    """Live sessions in least-recently-used order, within a memory budget. A session left out is rebuilt
    from Redis on its next call (a few ms for LeNet), so the budget trades memory for the latency of
    many clients taking turns: a count of 32 made every call of 200 clients a rebuild."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._items: OrderedDict[tuple[str, str], tuple[LiveSession, int]] = OrderedDict()
        self.pruned_at = time.monotonic()

    def get(self, tenant: str, sid: str) -> LiveSession | None:
        got = self._items.get((tenant, sid))
        if got is None:
            return None
        self._items.move_to_end((tenant, sid))
        return got[0]

    def put(self, s: LiveSession) -> None:
        key = (s.tenant, s.sid)
        old = self._items.pop(key, None)
        cost = footprint(s)  # again for a session already in: its forward may have grown it
        self.used += cost - (old[1] if old is not None else 0)
        self._items[key] = (s, cost)
        while self.used > self.budget and len(self._items) > 1:  # the session in use always stays
            _, (_, freed) = self._items.popitem(last=False)
            self.used -= freed

    def drop(self, tenant: str, sid: str) -> None:
        got = self._items.pop((tenant, sid), None)
        if got is not None:
            self.used -= got[1]

    def prune(self, alive: Callable[[list[tuple[str, str]]], list[bool]]) -> int:
        """Drop the sessions ``alive`` says are gone (deleted or expired: this worker is not told);
        how many were dropped."""
        ids = list(self._items)
        gone = [key for key, here in zip(ids, alive(ids), strict=True) if not here]
        for tenant, sid in gone:
            self.drop(tenant, sid)
        return len(gone)

    def __len__(self) -> int:
        return len(self._items)


# How often a session worker looks for cached sessions deleted or expired since, and hands their memory back.
PRUNE_EVERY_S = 10.0


def prune_gone(client: redis.Redis, keys: Keys, cache: SessionCache) -> None:
    """At most every PRUNE_EVERY_S: drop cached sessions whose state left Redis, then return the freed
    memory to the system (the workers keep freed memory for reuse otherwise: ``launcher.tuning``)."""
    now = time.monotonic()
    if now - cache.pruned_at < PRUNE_EVERY_S or not len(cache):
        return
    cache.pruned_at = now

    def alive(ids: list[tuple[str, str]]) -> list[bool]:
        pipe = client.pipeline(transaction=False)
        for tenant, sid in ids:
            pipe.exists(keys.session(tenant, sid))
        return [bool(n) for n in pipe.execute()]

    if cache.prune(alive):
        gc.collect()  # a live graph's reference cycles hold its activations until collected
        _trim_heap()


def _trim_heap() -> None:
    """Hand the heap's free memory back to the kernel once: workers keep freed memory for reuse
    (``launcher.tuning.keep_freed_memory``), which would keep deleted sessions' memory for good."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def claim(client: redis.Redis, keys: Keys, attempt: str, worker: str, ttl_s: float) -> None:
    """Take this attempt of a call for ``worker``; ``Abandoned`` when the API already gave up on it."""
    if not client.eval(CLAIM, 1, keys.call_claim(attempt), worker, int(ttl_s * 1000)):
        raise Abandoned(attempt)


def acquire(
    client: redis.Redis,
    keys: Keys,
    settings: Settings,
    call: dict[str, Any],
    *,
    worker: str,
    hold_s: float,
    recorded: bool,
) -> tuple[int, dict[str, int], str] | Recorded:
    """Claim the call and lock its session: the version, part stamps and lock token, or the recorded answer.

    Never waits for the lock: a session locked by a live worker is a 503 with Retry-After (the API
    serialises one client's calls, so this takes calls from several API processes at once), and a
    lock whose holder's heartbeat went stale is taken over, since its holder will never release it.
    """
    tenant, sid, call_id = call["tenant"], call["session_id"], call["call_id"]
    attempt = call.get("attempt", call_id)
    token = f"{worker}|{attempt}"
    lock = keys.session_lock(tenant, sid)
    call_keys = (keys.session(tenant, sid), lock, keys.call_claim(attempt), keys.session_call(tenant, sid, call_id))
    claim_ms = int((settings.call_timeout_s + 60) * 1000)
    for _ in range(2):
        code, *rest = client.eval(ACQUIRE, 4, *call_keys, token, int(hold_s * 1000), worker, claim_ms, int(recorded))
        if code == -3:
            raise Abandoned(attempt)
        if code == -1:
            raise NotFound(f"session '{sid}' not found")
        if code == -4:
            frame, op = rest
            if op.decode() != call["op"]:
                raise Conflict(
                    f"Idempotency-Key '{call_id}' was already used for '{op.decode()}' on this session; "
                    f"use a new key for this '{call['op']}'"
                )
            return Recorded(frame)
        if code >= 0:
            return int(code), json.loads(rest[0]), token
        holder = rest[0]
        holder_worker = holder.decode().partition("|")[0]
        if not heartbeat_stale(client.pttl(keys.worker(holder_worker)), settings.worker_heartbeat_ttl_s):
            break
        log.warning("session %s: taking over the lock of dead worker %s", sid, holder_worker)
        client.eval(STEAL, 1, lock, holder, token, int(hold_s * 1000))
    raise ServiceUnavailable(
        f"session '{sid}' is busy with another call; send calls on one session one at a time, or retry",
        retry_after=1,
    )


def record(pipe: Any, keys: Keys, s: LiveSession, call_id: str, op: str, frame: bytes, ttl_s: int) -> None:
    """Queue on ``pipe`` the call's answer under its call id, with the version it left the session at."""
    key = keys.session_call(s.tenant, s.sid, call_id)
    pipe.hset(key, mapping={"frame": frame, "op": op, "version": s.version})
    pipe.expire(key, ttl_s)


def load(
    client: redis.Redis, keys: Keys, cache: SessionCache, tenant: str, sid: str, version: int, stamps: dict[str, int]
) -> LiveSession:
    """The live session at ``version``: from the cache, refreshed with the parts that changed, or rebuilt."""
    key = keys.session(tenant, sid)
    s = cache.get(tenant, sid)
    if s is not None and s.version == version:
        return s
    if s is None:
        meta_raw = client.hget(key, "meta")
        if meta_raw is None:
            raise NotFound(f"session '{sid}' not found")
        meta = json.loads(meta_raw)
        fixed = opt_bytes(client.hget(key, "fixed")) if meta.get("format") == "export" else None
        s = build_live(tenant, sid, meta, seed=None, weights=state_codec.unpack(fixed)[0] if fixed else None)
        changed = [p for p in PARTS if p in stamps]
    else:
        changed = [p for p in PARTS if stamps.get(p) != s.stamps.get(p)]
    if changed:
        for part, blob in zip(changed, client.hmget(key, changed), strict=True):
            apply_part(s, part, opt_bytes(blob))
    s.version, s.stamps = version, dict(stamps)
    cache.put(s)
    return s


def apply_part(s: LiveSession, part: str, blob: bytes | None) -> None:
    """Bring one part of a live session to what the store holds (``None``: the part is absent)."""
    if part in ("params", "buffers"):
        assert blob is not None  # encode_part always writes params, buffers and rng
        tensors, _ = state_codec.unpack(blob)
        s.net.load_state_dict(tensors, strict=False)
    elif part == "grads":
        state_codec.set_grads(s.net, state_codec.unpack(blob)[0] if blob else {})
    elif part == "optim":
        if s.optimizer is not None and blob:
            state_codec.load_optimizer(s.optimizer, blob)
    elif part == "rng":
        assert blob is not None
        s.rng = state_codec.unpack(blob)[0]
    elif part == "fwd":
        s.fwd = _decode_fwd(blob) if blob else None
        if s.loss is not None:
            s.loss.value = None
    elif part == "fwd_params":
        if s.fwd is not None:
            s.fwd.params_at_forward = state_codec.unpack(blob)[0] if blob else None
    elif part == "loss":
        if blob:
            tensors, meta = state_codec.unpack(blob)
            s.loss = LossRecord(meta["criterion"], tensors["target"])
        else:
            s.loss = None
    elif part == "graph":
        doc = json.loads(blob) if blob else {}
        s.freed = bool(doc.get("freed", False))
        s.net.train(bool(doc.get("training", True)))


def encode_part(s: LiveSession, part: str) -> bytes | None:
    """The stored form of one part of a live session; ``None`` deletes the field."""
    if part in ("params", "buffers"):
        params, buffers = state_codec.split_state(s.net)
        return state_codec.pack(params if part == "params" else buffers)
    if part == "grads":
        return state_codec.pack(state_codec.grads(s.net))
    if part == "optim":
        return None if s.optimizer is None else state_codec.optimizer_to_bytes(s.optimizer)
    if part == "rng":
        return state_codec.pack(s.rng)
    if part == "fwd":
        return None if s.fwd is None else _encode_fwd(s.fwd)
    if part == "fwd_params":
        rec = s.fwd
        return None if rec is None or rec.params_at_forward is None else state_codec.pack(rec.params_at_forward)
    if part == "loss":
        return None if s.loss is None else state_codec.pack({"target": s.loss.target}, {"criterion": s.loss.criterion})
    if part == "graph":
        return json.dumps({"freed": s.freed, "training": s.net.training}).encode()
    raise ValueError(f"unknown session part {part!r}")


def _encode_fwd(rec: ForwardRecord) -> bytes:
    inputs = {f"in.{k}": v for k, v in rec.input.items()} if isinstance(rec.input, dict) else {"input": rec.input}
    tensors = {
        **inputs,
        **{f"rng.{k}": v for k, v in rec.rng_before.items()},
        **{f"buf.{k}": v for k, v in rec.buffers_before.items()},
    }
    return state_codec.pack(tensors, {"params_stamp": rec.params_stamp, "training": rec.training})


def _decode_fwd(blob: bytes) -> ForwardRecord:
    tensors, meta = state_codec.unpack(blob)
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    buffers = {k[4:]: v for k, v in tensors.items() if k.startswith("buf.")}
    named = {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}
    rec = ForwardRecord(named or tensors["input"], rng, buffers, int(meta["params_stamp"]))
    rec.training = bool(meta.get("training", True))
    return rec


def write(pipe: Any, keys: Keys, s: LiveSession, parts: frozenset[str] | set[str], ttl_s: int) -> None:
    """Queue on ``pipe`` the changed parts, the next version and its stamps; the caller executes it."""
    key = keys.session(s.tenant, s.sid)
    s.version += 1
    sets: dict[str, Any] = {}
    for part in sorted(parts):
        blob = encode_part(s, part)
        s.stamps[part] = s.version
        if blob is None:
            pipe.hdel(key, part)
        else:
            sets[part] = blob
    sets["version"] = s.version
    sets["stamps"] = json.dumps(s.stamps)
    if s.fixed:  # an exported network's non-persistent buffers and constants: no state_dict part holds them
        sets["fixed"] = state_codec.pack(s.fixed)
    pipe.hset(key, mapping=sets)
    pipe.expire(key, ttl_s)


def write_new(pipe: Any, keys: Keys, s: LiveSession, queue: str, ttl_s: int) -> None:
    """A fresh session: every part, its meta and the queue its calls go to."""
    key = keys.session(s.tenant, s.sid)
    s.version = 1
    sets: dict[str, Any] = {"meta": json.dumps(s.meta), "queue": queue, "version": 1}
    for part in PARTS:
        blob = encode_part(s, part)
        s.stamps[part] = 1
        if blob is not None:
            sets[part] = blob
    sets["stamps"] = json.dumps(s.stamps)
    if s.fixed:  # an exported network's non-persistent buffers and constants: no state_dict part holds them
        sets["fixed"] = state_codec.pack(s.fixed)
    pipe.hset(key, mapping=sets)
    pipe.expire(key, ttl_s)


def release(pipe: Any, keys: Keys, tenant: str, sid: str, token: str) -> None:
    pipe.eval(RELEASE, 1, keys.session_lock(tenant, sid), token)
