"""One session call, start to finish: lock the session, bring it up to date, run the op, write back, reply.

The answer goes onto ``Keys.reply(call_id)`` as one frame: a kind byte, the milliseconds the worker
spent (ASCII) and a newline, then ``j``: a JSON body, ``r``: a media type line and raw bytes, or
``e``: a ``GradserveError.to_dict()``. State, lock release and reply go out in
one MULTI/EXEC, so the API never sees an answer whose state is not yet in Redis.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import orjson
import redis

from models.errors import GradserveError, InvalidInput
from models.nn.state_codec import tensor_from_wire
from models.settings import Settings
from models.store.keys import Keys
from models.wire.tensors import from_safetensors
from worker import session_store as store
from worker import sessions as ops
from worker.session_store import SessionCache

log = logging.getLogger("gradserve.sessions")
cache = SessionCache()


def handle(client: redis.Redis, keys: Keys, settings: Settings, call: dict[str, Any]) -> None:
    started = time.perf_counter()
    tenant, sid, op, call_id = call["tenant"], call["session_id"], call["op"], call["call_id"]
    if time.time() > call["deadline"]:
        # The API gave up on this call (e.g. it was redelivered long after): running it now would
        # change a session behind its owner's back.
        log.warning("dropping session call %s (%s): past its deadline", call_id, op)
        return
    pipe = client.pipeline(transaction=True)
    locked = False
    try:
        if op == "create":
            s = ops.build_live(tenant, sid, call["meta"], seed=call["args"]["seed"])
            store.write_new(pipe, keys, s, call["queue"], settings.session_ttl_s)
            frame = _frame(ops.Outcome(call["meta"]["public"]))
            cache.put(s)
        else:
            hold_s = max(1.0, call["deadline"] - time.time())
            version, stamps = store.acquire(
                client, keys, tenant, sid, call_id, hold_s=hold_s, deadline=call["deadline"]
            )
            locked = True
            s = store.load(client, keys, cache, tenant, sid, version, stamps)
            outcome = _run(s, op, _args(client, call), settings)
            if outcome.parts:
                store.write(pipe, keys, s, outcome.parts, settings.session_ttl_s)
            else:
                pipe.expire(keys.session(tenant, sid), settings.session_ttl_s)
            frame = _frame(outcome)
    except GradserveError as exc:
        pipe.reset()
        cache.drop(tenant, sid)  # the live objects may be half-changed; the store is not
        frame = b"e\n" + orjson.dumps(exc.to_dict())
    except Exception as exc:  # a bug or an exotic torch error must reach the caller, not kill the worker
        pipe.reset()
        cache.drop(tenant, sid)
        log.error("session call %s (%s) failed:\n%s", call_id, op, traceback.format_exc())
        err = GradserveError(f"the worker failed on '{op}': {type(exc).__name__}: {exc}")
        frame = b"e\n" + orjson.dumps(err.to_dict())
    if locked:
        store.release(pipe, keys, tenant, sid, call_id)
    reply = keys.reply(call_id)
    spent = f"{(time.perf_counter() - started) * 1e3:.3f}".encode()
    pipe.lpush(reply, frame[:1] + spent + frame[1:])
    pipe.expire(reply, settings.reply_ttl_s)
    pipe.execute()


def _run(s: ops.LiveSession, op: str, args: dict[str, Any], settings: Settings) -> ops.Outcome:
    if op == "forward":
        return ops.forward(s, args["input"], settings)
    if op == "loss":
        return ops.loss(s, args["criterion"], args["target"])
    if op == "backward":
        return ops.backward(s, args.get("gradient"), bool(args.get("retain_graph", False)))
    if op == "zero_grad":
        return ops.zero_grad(s, bool(args.get("set_to_none", True)))
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
    if op == "put_state":
        return ops.put_state(s, from_safetensors(args["state"], loc=("body",)))
    raise InvalidInput(f"unknown session operation '{op}'", ("path",))


def _args(client: redis.Redis, call: dict[str, Any]) -> dict[str, Any]:
    """Tensors arrive inline (``{"wire": base64}``) or, when large, as a Redis key the API filled."""
    args = dict(call["args"])
    for name, ref in call.get("tensors", {}).items():
        if "wire" in ref:
            args[name] = tensor_from_wire(ref["wire"])
            continue
        blob = client.getdel(ref["key"])
        if blob is None:
            raise InvalidInput(
                f"the uploaded '{name}' expired before a worker took the call; send it again", ("body", name)
            )
        args[name] = blob if ref.get("raw") else from_safetensors(blob)["t"]
    return args


def _frame(outcome: ops.Outcome) -> bytes:
    if outcome.media is None:
        return b"j\n" + orjson.dumps(outcome.body)
    body = outcome.body.encode() if isinstance(outcome.body, str) else outcome.body
    return b"r\n" + outcome.media.encode() + b"\n" + body
