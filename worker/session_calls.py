"""One session call, start to finish: lock the session, bring it up to date, run the op, write back, reply.

The answer goes onto ``Keys.reply(call_id)`` as one frame (``models.wire.session``). State, lock
release and reply go out in one MULTI/EXEC, so the API never sees an answer whose state is not yet
in Redis. Answers that carry numbers say how many threads computed them (``threads``): a local run
gives the same bits with ``torch.set_num_threads`` at that count.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from typing import Any

import redis
import torch

from models.errors import Conflict, GradserveError, InvalidInput, NotFound
from models.nn import state_codec
from models.settings import Settings, get_settings
from models.store.keys import Keys
from models.store.replies import opt_bytes
from models.wire.session import answer_frame, error_frame, read_ref, stamp
from models.wire.tensors import from_safetensors, to_safetensors
from worker import session_store as store
from worker import sessions as ops
from worker.activations import activations
from worker.job_step import before_step, continuation, job_state_at
from worker.lock_release import release_when_back
from worker.session_store import SessionCache

log = logging.getLogger("gradserve.sessions")
cache = SessionCache(get_settings().session_cache_mb * 1024 * 1024)
# Ops whose answers carry numbers a thread count can change (reductions split across threads).
NUMERIC_OPS = frozenset({"forward", "loss", "backward", "parameter", "sgd_update", "step"})
# Ops that change the session: their answers are recorded by call id, so a retry is not applied twice.
RECORDED_OPS = frozenset(
    {"forward", "loss", "backward", "zero_grad", "sgd_update", "step", "put_state", "train", "manual_seed"}
)


def handle(client: redis.Redis, keys: Keys, settings: Settings, call: dict[str, Any], worker: str = "") -> None:
    started = time.perf_counter()
    tenant, sid, op, call_id = call["tenant"], call["session_id"], call["op"], call["call_id"]
    attempt = call.get("attempt", call_id)
    if time.time() > call["deadline"]:
        # The API gave up on this call (e.g. it was redelivered long after): running it now would
        # change a session behind its owner's back.
        log.warning("dropping session call %s (%s): past its deadline", attempt, op)
        return
    binary = bool(call.get("binary"))
    pipe = client.pipeline(transaction=True)
    token = None
    try:
        if op == "create":
            store.claim(client, keys, attempt, worker, settings.call_timeout_s + 60)
            frame = _create(client, keys, settings, pipe, call, binary)
        else:
            hold_s = max(1.0, call["deadline"] - time.time())
            got = store.acquire(client, keys, settings, call, worker=worker, hold_s=hold_s, recorded=op in RECORDED_OPS)
            if isinstance(got, store.Recorded):
                frame = got.frame
            else:
                version, stamps, token = got
                s = store.load(client, keys, cache, tenant, sid, version, stamps)
                args = _args(client, call)
                if op == "activations":  # the batch of the step the session was opened at
                    args["batch"] = _step_batch(client, keys, tenant, sid)
                if op == "continuation":  # the job's state at that step, beside the session's own
                    args["job_state"] = _from_job(client, keys, tenant, sid, "job_state")
                outcome = _run(s, op, args, settings)
                if outcome.parts:
                    store.write(pipe, keys, s, outcome.parts, settings.session_ttl_s)
                else:
                    pipe.expire(keys.session(tenant, sid), settings.session_ttl_s)
                if op in NUMERIC_OPS:
                    outcome.body["threads"] = torch.get_num_threads()
                frame = answer_frame(outcome.body, media=outcome.media, binary=binary)
                if op in RECORDED_OPS:
                    store.record(pipe, keys, s, call_id, op, frame, settings.session_call_record_ttl_s)
    except store.Abandoned:
        log.warning("dropping session call %s (%s): the API gave up on it before it was taken", attempt, op)
        return
    except GradserveError as exc:
        pipe.reset()
        cache.drop(tenant, sid)  # the live objects may be half-changed; the store is not
        frame = error_frame(exc)
    except Exception as exc:  # a bug or an exotic torch error must reach the caller, not kill the worker
        pipe.reset()
        cache.drop(tenant, sid)
        log.error("session call %s (%s) failed:\n%s", attempt, op, traceback.format_exc())
        frame = error_frame(GradserveError(f"the worker failed on '{op}': {type(exc).__name__}: {exc}"))
    if token is not None:
        store.release(pipe, keys, tenant, sid, token)
    reply = keys.reply(attempt)
    pipe.lpush(reply, stamp(frame, (time.perf_counter() - started) * 1e3))
    pipe.expire(reply, settings.reply_ttl_s)
    try:
        pipe.execute()
    except redis.RedisError:
        if token is not None:  # the call dies with Redis; its lock must not outlive it
            release_when_back(client, keys, tenant, sid, token, until=call["deadline"] + 1)
        raise
    with contextlib.suppress(redis.RedisError):  # housekeeping after the answer went out; retried later
        store.prune_gone(client, keys, cache)


def _create(
    client: redis.Redis, keys: Keys, settings: Settings, pipe: Any, call: dict[str, Any], binary: bool
) -> bytes:
    """Build and store a new session; a retried create (same Idempotency-Key, so same id) answers as the first."""
    tenant, sid = call["tenant"], call["session_id"]
    if client.hexists(keys.session(tenant, sid), "version"):  # admission left a placeholder: not built yet
        return answer_frame(call["meta"]["public"], binary=binary)
    from_job = call["args"].get("from_job")
    if from_job is not None:  # the job's own state before one of its steps, and that step's batch
        at = before_step(client, keys, tenant, from_job["job_id"], from_job["step"], from_job["start"])
        device = at.trainer.device
        rng = state_codec.rng_state(device)
        s = ops.LiveSession(
            tenant, sid, call["meta"], device, at.trainer.net, at.trainer.optimizer, rng, fixed=at.fixed
        )
        store.write_new(pipe, keys, s, call["queue"], settings.session_ttl_s)
        batch = {"inputs": at.inputs.cpu(), "targets": at.targets.cpu()}
        step_batch = to_safetensors(batch, metadata={"step": str(from_job["step"])})
        pipe.hset(keys.session(tenant, sid), mapping={"batch": step_batch, "job_state": job_state_at(at.state)})
        cache.put(s)
        return answer_frame(call["meta"]["public"], binary=binary)
    weights = None
    if call["meta"].get("format") == "export":
        blob = opt_bytes(client.hget(call["meta"]["weights_key"], "weights"))
        if blob is None:
            raise NotFound("the network's weights are gone (the network was deleted or expired); upload it again")
        weights = from_safetensors(blob, loc=("body", "network_id"))
    s = ops.build_live(tenant, sid, call["meta"], seed=call["args"]["seed"], weights=weights)
    store.write_new(pipe, keys, s, call["queue"], settings.session_ttl_s)
    cache.put(s)
    return answer_frame(call["meta"]["public"], binary=binary)


def _run(s: ops.LiveSession, op: str, args: dict[str, Any], settings: Settings) -> ops.Outcome:
    if op == "forward":
        named = {k.removeprefix("inputs."): v for k, v in args.items() if k.startswith("inputs.")}
        return ops.forward(s, named or args["input"], settings)
    if op == "loss":
        return ops.loss(s, args["criterion"], args["target"])
    if op == "backward":
        return ops.backward(s, args.get("gradient"), bool(args.get("retain_graph", False)))
    if op == "zero_grad":
        return ops.zero_grad(s, bool(args.get("set_to_none", True)))
    if op == "train":
        return ops.set_mode(s, bool(args["mode"]))
    if op == "manual_seed":
        return ops.manual_seed(s, int(args["seed"]))
    if op == "parameter":
        return ops.parameter(s, args["name"])
    if op == "sgd_update":
        return ops.sgd_update(s, float(args["lr"]))
    if op == "step":
        return ops.step(s)
    if op == "graph":
        return ops.graph(s, args["format"], int(args["max_nodes"]), args.get("root", "auto"))
    if op == "get_state":
        return ops.get_state(s)
    if op == "activations":
        return activations(
            s, args["batch"], args["criterion"], args["layers"], bins=args["bins"], tensors=args["tensors"]
        )
    if op == "continuation":
        return continuation(s, args["job_state"])
    if op == "put_state":
        return ops.put_state(s, from_safetensors(args["state"], loc=("body",)))
    raise InvalidInput(f"unknown session operation '{op}'", ("path",))


def _step_batch(client: redis.Redis, keys: Keys, tenant: str, sid: str) -> dict[str, torch.Tensor]:
    return from_safetensors(_from_job(client, keys, tenant, sid, "batch"), loc=("session", "batch"))


def _from_job(client: redis.Redis, keys: Keys, tenant: str, sid: str, part: str) -> bytes:
    blob = opt_bytes(client.hget(keys.session(tenant, sid), part))
    if blob is None:
        raise Conflict(f"this session was not opened at a job's step: it has no {part.replace('_', ' ')}")
    return blob


def _args(client: redis.Redis, call: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments with its tensor references resolved (large ones are taken out of Redis)."""
    args = dict(call["args"])
    for name, ref in call.get("tensors", {}).items():
        args[name] = read_ref(name, ref, lambda key: opt_bytes(client.getdel(key)))
    return args
