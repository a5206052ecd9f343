"""Session state in Redis, split into parts, and the worker's cache of live sessions.

The session hash (``Keys.session``) holds ``meta`` and ``queue`` (written once), ``version``,
``stamps`` (the version at which each part was last written) and one field per part:

    params, buffers, grads, optim, rng   the tutorial's ``net`` and ``optimizer`` (safetensors)
    fwd        the last forward's input, pre-forward RNG state and buffers: enough to replay it
    fwd_params the weights that forward used, kept once a step changes them
    loss       the last criterion and target
    graph      {"freed": bool}: whether a backward without retain_graph already ran

A call writes only the parts it changed, so a forward writes a few kilobytes. A worker keeps the
sessions it served in memory; on the next call it compares stamps and reads only the parts another
worker changed since, so calls that alternate between workers stay cheap.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

import redis

from models.errors import NotFound, Timeout
from models.nn import state_codec
from models.store.keys import Keys
from worker.sessions import ForwardRecord, LiveSession, LossRecord, build_live

PARTS = ("params", "buffers", "grads", "optim", "rng", "fwd", "fwd_params", "loss", "graph")
# Live sessions a worker keeps; LeNet's is ~1 MB, so this bounds memory for ordinary networks.
CACHE_SIZE = 32
LOCK_POLL_S = 0.002

# Take the session's lock and say where it stands, in one round trip: -1 no such session, -2 busy.
ACQUIRE = """
local v = redis.call('hget', KEYS[1], 'version')
if not v then return {-1, false} end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {tonumber(v), redis.call('hget', KEYS[1], 'stamps')}
end
return {-2, false}
"""
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class SessionCache:
    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], LiveSession] = OrderedDict()

    def get(self, tenant: str, sid: str) -> LiveSession | None:
        s = self._items.get((tenant, sid))
        if s is not None:
            self._items.move_to_end((tenant, sid))
        return s

    def put(self, s: LiveSession) -> None:
        self._items[(s.tenant, s.sid)] = s
        self._items.move_to_end((s.tenant, s.sid))
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def drop(self, tenant: str, sid: str) -> None:
        self._items.pop((tenant, sid), None)


def acquire(
    client: redis.Redis, keys: Keys, tenant: str, sid: str, token: str, *, hold_s: float, deadline: float
) -> tuple[int, dict[str, int]]:
    """Lock the session for this call; its version and part stamps. Waits while another call holds it."""
    while True:
        code, stamps = client.eval(
            ACQUIRE, 2, keys.session(tenant, sid), keys.session_lock(tenant, sid), token, int(hold_s * 1000)
        )
        if code == -1:
            raise NotFound(f"session '{sid}' not found")
        if code >= 0:
            return int(code), json.loads(stamps)
        if time.time() > deadline:
            raise Timeout(f"session '{sid}' stayed busy with another call until the call timed out")
        time.sleep(LOCK_POLL_S)


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
        s = build_live(tenant, sid, json.loads(meta_raw), seed=None)
        changed = [p for p in PARTS if p in stamps]
    else:
        changed = [p for p in PARTS if stamps.get(p) != s.stamps.get(p)]
    if changed:
        for part, blob in zip(changed, client.hmget(key, changed), strict=True):
            apply_part(s, part, blob)
    s.version, s.stamps = version, dict(stamps)
    cache.put(s)
    return s


def apply_part(s: LiveSession, part: str, blob: bytes | None) -> None:
    """Bring one part of a live session to what the store holds (``None``: the part is absent)."""
    if part in ("params", "buffers"):
        tensors, _ = state_codec.unpack(blob)
        s.net.load_state_dict(tensors, strict=False)
    elif part == "grads":
        state_codec.set_grads(s.net, state_codec.unpack(blob)[0] if blob else {})
    elif part == "optim":
        if s.optimizer is not None and blob:
            state_codec.load_optimizer(s.optimizer, blob)
    elif part == "rng":
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
        s.freed = bool(json.loads(blob)["freed"]) if blob else False


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
        return json.dumps({"freed": s.freed}).encode()
    raise ValueError(f"unknown session part {part!r}")


def _encode_fwd(rec: ForwardRecord) -> bytes:
    tensors = {
        "input": rec.input,
        **{f"rng.{k}": v for k, v in rec.rng_before.items()},
        **{f"buf.{k}": v for k, v in rec.buffers_before.items()},
    }
    return state_codec.pack(tensors, {"params_stamp": rec.params_stamp})


def _decode_fwd(blob: bytes) -> ForwardRecord:
    tensors, meta = state_codec.unpack(blob)
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    buffers = {k[4:]: v for k, v in tensors.items() if k.startswith("buf.")}
    return ForwardRecord(tensors["input"], rng, buffers, int(meta["params_stamp"]))


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
    pipe.hset(key, mapping=sets)
    pipe.expire(key, ttl_s)


def release(pipe: Any, keys: Keys, tenant: str, sid: str, token: str) -> None:
    pipe.eval(RELEASE, 1, keys.session_lock(tenant, sid), token)
