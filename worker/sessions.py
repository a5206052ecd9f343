"""Session operations on a live model: plain PyTorch, no Celery or Redis (worker.session_store persists them).

A ``LiveSession`` is what the tutorial's REPL holds: ``net``, the optimizer, the last forward's
output (with its graph), the last loss. Each op returns an ``Outcome``: the response body and the
state parts it changed, which the store writes back. When a worker loads a session without its
live graph, ``ensure_graph`` replays the recorded forward from the pre-forward RNG state and
buffers (and the pre-update weights, if a step came since), so gradients come out bit for bit.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import TypeAdapter
from torch import nn

from models.errors import Conflict, InvalidInput, NotFound, first_line
from models.nn import state_codec
from models.nn.build import build_network
from models.nn.exported_admit import build_stored
from models.nn.graph import mark_freed, to_dot, to_svg, trace
from models.nn.objectives import build_loss, build_optimizer
from models.nn.shapes import fmt_shape
from models.placement import worker_device
from models.settings import Settings
from models.spec.losses import LossSpec
from models.spec.network import NetworkSpec
from models.spec.optimizers import OptimizerSpec
from models.wire.tensors import dtype_name, scalar, to_safetensors
from worker.session_checks import check_class_targets, check_input
from worker.session_inputs import Inputs, batch_size, named, run_net, to_device

_LOSS = TypeAdapter(LossSpec)
_OPTIMIZER = TypeAdapter(OptimizerSpec)

FREED_MSG = (
    "the graph of the last forward was already freed by a backward: PyTorch frees the saved tensors of a graph "
    'when backward runs, so a second backward through it fails. Pass "retain_graph": true to the first '
    "backward to keep it, or run forward (and loss) again"
)
MODIFIED_MSG = (
    "the parameters were modified in place (by step, sgd_update or a state upload) after the forward that "
    "built this graph, so its saved tensors are stale; run forward (and loss) again before backward"
)


@dataclass
class ForwardRecord:
    input: Inputs
    rng_before: dict[str, torch.Tensor]
    buffers_before: dict[str, torch.Tensor]
    params_stamp: int  # the params part's stamp when the forward ran
    params_at_forward: dict[str, torch.Tensor] | None = None  # kept once the params change after it
    output: torch.Tensor | None = None  # live, with its graph; None until replayed
    training: bool = True  # the mode it ran in: a replay runs in it too


@dataclass
class LossRecord:
    criterion: dict[str, Any]
    target: torch.Tensor
    value: torch.Tensor | None = None


@dataclass
class LiveSession:
    tenant: str
    sid: str
    meta: dict[str, Any]
    device: torch.device
    net: nn.Module
    optimizer: torch.optim.Optimizer | None
    rng: dict[str, torch.Tensor]
    version: int = 0
    stamps: dict[str, int] = field(default_factory=dict)
    fwd: ForwardRecord | None = None
    loss: LossRecord | None = None
    freed: bool = False
    fixed: dict[str, torch.Tensor] = field(default_factory=dict)  # see worker.session_store: part "fixed"


@dataclass
class Outcome:
    body: Any  # JSON-ready but for top-level tensors (models.wire.session encodes them), or bytes/str with ``media``
    parts: frozenset[str] = frozenset()
    media: str | None = None


def build_live(
    tenant: str, sid: str, meta: dict[str, Any], *, seed: int | None, weights: dict[str, torch.Tensor] | None = None
) -> LiveSession:
    """The session's objects; with a seed, initialised as ``torch.manual_seed(seed); net = Net()`` does.

    An exported network's weights are the user's own (``weights``, read from the network at create);
    its seed seeds the RNG only, as ``torch.manual_seed(seed)`` before a local loop does."""
    device = torch.device(meta["device"])
    if worker_device(device.type, torch.cuda.is_available()) is None:
        raise Conflict("this session lives on a GPU but the worker that took the call has none")
    if seed is not None:
        torch.manual_seed(seed)
    net: nn.Module
    fixed_state: dict[str, torch.Tensor] = {}
    if meta.get("format") == "export":
        built = build_stored(meta, weights)
        net, fixed_state = built.net.to(device), built.fixed
    elif seed is not None:
        net = build_network(NetworkSpec.model_validate(meta["spec"])).to(device)
    else:  # weights come from the store: allocate without initialising
        with torch.device("meta"):
            net = build_network(NetworkSpec.model_validate(meta["spec"]))
        net = net.to_empty(device=device)
    net.train()
    opt = None
    if meta.get("optimizer"):
        opt = build_optimizer(_OPTIMIZER.validate_python(meta["optimizer"]), net.parameters())
    return LiveSession(tenant, sid, meta, device, net, opt, state_codec.rng_state(device), fixed=fixed_state)


# --- ops --------------------------------------------------------------------------------------------------------


def forward(s: LiveSession, x: Inputs, settings: Settings) -> Outcome:
    check_input(s.meta, x, settings)
    x = to_device(named(s.meta, x), s.device)
    before = {k: b.clone() for k, b in s.net.named_buffers()}
    rng_before = s.rng
    state_codec.set_rng_state(s.rng, s.device)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = run_net(s.net, x)
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
        raise InvalidInput(f"forward failed: {first_line(exc)}", ("body", "input")) from exc
    s.rng = state_codec.rng_state(s.device)
    s.fwd = ForwardRecord(x, rng_before, before, s.stamps.get("params", 0), output=out, training=s.net.training)
    s.loss, s.freed = None, False
    parts = {"fwd", "fwd_params", "loss", "graph"}
    if before:
        parts.add("buffers")
    if not state_codec.same_rng(rng_before, s.rng):
        parts.add("rng")
    body = {"output": out, "shape": list(out.shape), "dtype": dtype_name(out), "grad_fn": _fn_name(out)}
    return Outcome(_with_warnings(body, caught), frozenset(parts))


def loss(s: LiveSession, criterion: dict[str, Any], target: torch.Tensor) -> Outcome:
    if s.fwd is None:
        raise Conflict("no output to compute a loss on: call forward first")
    spec = _LOSS.validate_python(criterion)
    ensure_graph(s, with_loss=False)
    output = _live(s.fwd.output)
    check_class_targets(spec, output, target)
    target = target.to(s.device)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = build_loss(spec, s.device)(output, target)
    except (RuntimeError, ValueError, IndexError) as exc:
        got = f"output {fmt_shape(output.shape)} {dtype_name(output)}"
        raise InvalidInput(
            f"{spec.type} failed on {got} and target {fmt_shape(target.shape)} {dtype_name(target)}: {first_line(exc)}",
            ("body", "target"),
        ) from exc
    s.loss = LossRecord(criterion, target, value)
    shown = scalar(value.item()) if value.dim() == 0 else value
    body = {"loss": shown, "shape": list(value.shape), "grad_fn": _fn_name(value)}
    return Outcome(_with_warnings(body, caught), frozenset({"loss"}))


def backward(s: LiveSession, gradient: torch.Tensor | None, retain_graph: bool) -> Outcome:
    if s.fwd is None:
        raise Conflict("nothing to backprop: no forward has run in this session; call forward (and loss) first")
    if gradient is None and s.loss is None:
        raise Conflict(
            'no loss to backprop from: call loss first, or pass a "gradient" shaped like the output '
            f"{fmt_shape(_output_shape(s))} to backprop from the output"
        )
    if s.freed:
        raise Conflict(FREED_MSG)
    ensure_graph(s, with_loss=gradient is None)
    if gradient is None:
        root, source = _live(s.loss.value if s.loss else None), "loss"
        if root.numel() != 1:
            raise Conflict(
                f"the last loss has shape {fmt_shape(root.shape)} (reduction='none'), and backward "
                'without a gradient needs a scalar; pass a "gradient" of that shape'
            )
    else:
        root, source = _live(s.fwd.output), "output"
        if list(gradient.shape) != list(root.shape):
            raise InvalidInput(
                f"gradient has shape {fmt_shape(gradient.shape)} but the output has shape "
                f"{fmt_shape(root.shape)}; they must be equal",
                ("body", "gradient"),
            )
        gradient = gradient.to(s.device)
    if root.grad_fn is None:
        raise Conflict(f"nothing to backprop: the {source} does not depend on any parameter")
    try:
        root.backward(gradient, retain_graph=retain_graph)  # type: ignore[no-untyped-call]  # unannotated in torch
    except RuntimeError as exc:
        text = str(exc)
        if "backward through the graph a second time" in text:
            raise Conflict(FREED_MSG) from exc
        if "modified by an inplace operation" in text:
            raise Conflict(MODIFIED_MSG) from exc
        raise InvalidInput(f"backward failed: {first_line(exc)}", ("body", "gradient")) from exc
    parts = {"grads"}
    if not retain_graph:
        s.freed = True
        parts.add("graph")
    with_grad = [n for n, p in s.net.named_parameters() if p.grad is not None]
    return Outcome(
        {"backward_from": source, "retain_graph": retain_graph, "parameters_with_grad": with_grad}, frozenset(parts)
    )


def zero_grad(s: LiveSession, set_to_none: bool) -> Outcome:
    s.net.zero_grad(set_to_none=set_to_none)
    return Outcome({"set_to_none": set_to_none}, frozenset({"grads"}))


def set_mode(s: LiveSession, training: bool) -> Outcome:
    """``net.train(mode)`` / ``net.eval()``: dropout and batch norm switch as in PyTorch (an exported network
    switches to its eval program). The last forward keeps the mode it ran in."""
    s.net.train(training)
    return Outcome({"training": training}, frozenset({"graph"}))


def manual_seed(s: LiveSession, seed: int) -> Outcome:
    """``torch.manual_seed(seed)`` for the session's generator, so dropout masks after it match a local run
    that made the same call."""
    torch.manual_seed(seed)
    s.rng = state_codec.rng_state(s.device)
    return Outcome({"seed": seed}, frozenset({"rng"}))


def parameter(s: LiveSession, name: str) -> Outcome:
    params = dict(s.net.named_parameters())
    buffers = dict(s.net.named_buffers())
    if name in params:
        p = params[name]
        return Outcome(
            {
                "name": name,
                "kind": "parameter",
                "shape": list(p.shape),
                "dtype": dtype_name(p),
                "data": p,
                "grad": p.grad,
                "requires_grad": p.requires_grad,
            }
        )
    if name in buffers:
        b = buffers[name]
        return Outcome(
            {
                "name": name,
                "kind": "buffer",
                "shape": list(b.shape),
                "dtype": dtype_name(b),
                "data": b,
                "grad": None,
                "requires_grad": False,
            }
        )
    known = [*params, *buffers]
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise NotFound(
        f"no parameter named '{name}'; {hint}the parameters are: {', '.join(known[:40])}", close_matches=close
    )


def sgd_update(s: LiveSession, lr: float) -> Outcome:
    """The tutorial's manual rule: ``f.data.sub_(f.grad.data * learning_rate)`` for every parameter."""
    params = [(p, p.grad) for p in s.net.parameters() if p.grad is not None]
    if not params:
        raise Conflict("no parameter has a gradient: call backward before sgd_update")
    snapshot = _keep_params_for_graph(s)
    with torch.no_grad():
        for p, grad in params:
            p.sub_(grad * lr)
    return Outcome({"lr": lr, "updated": len(params)}, frozenset({"params"} | snapshot))


def step(s: LiveSession) -> Outcome:
    if s.optimizer is None:
        raise Conflict('this session has no optimizer: create it with "optimizer": {"type": "SGD", "lr": 0.01}')
    snapshot = _keep_params_for_graph(s)
    s.optimizer.step()
    return Outcome(
        {
            "optimizer": s.meta["optimizer"]["type"],
            "updated": sum(1 for g in s.optimizer.param_groups for p in g["params"] if p.grad is not None),
        },
        frozenset({"params", "optim"} | snapshot),
    )


def graph(s: LiveSession, fmt: str, max_nodes: int, root: str) -> Outcome:
    if s.fwd is None:
        raise Conflict("no graph yet: call forward (and loss) first")
    use_loss = root == "loss" or (root == "auto" and s.loss is not None)
    if use_loss and s.loss is None:
        raise Conflict("no loss yet: call loss first, or ask for root=output")
    replayed = ensure_graph(s, with_loss=use_loss)
    tensor = _live(s.loss.value if use_loss and s.loss else s.fwd.output)
    dump = trace(tensor, dict(s.net.named_parameters()), max_nodes)
    if replayed and s.freed:
        dump = mark_freed(dump)
    dump["of"] = "loss" if use_loss else "output"
    if fmt == "json":
        return Outcome(dump)
    source = to_dot(dump, title=(s.meta.get("spec") or s.meta.get("form") or {}).get("name", "Net"))
    if fmt == "dot":
        return Outcome(source, media="text/vnd.graphviz; charset=utf-8")
    return Outcome(to_svg(source), media="image/svg+xml")


def get_state(s: LiveSession) -> Outcome:
    blob = to_safetensors(s.net.state_dict())
    return Outcome(blob, media="application/octet-stream")


def put_state(s: LiveSession, tensors: dict[str, torch.Tensor]) -> Outcome:
    """``load_state_dict`` after checking every name, shape and dtype, so a bad file changes nothing."""
    own = s.net.state_dict()
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise InvalidInput(
            f"state names differ from the network's: missing {missing or 'none'}, unexpected {unexpected or 'none'}",
            ("body",),
        )
    for name, value in own.items():
        got = tensors[name]
        if got.shape != value.shape or got.dtype != value.dtype:
            raise InvalidInput(
                f"'{name}' is {fmt_shape(got.shape)} {dtype_name(got)} but the network's is "
                f"{fmt_shape(value.shape)} {dtype_name(value)}",
                ("body", name),
            )
    snapshot = _keep_params_for_graph(s)
    s.net.load_state_dict(tensors, strict=True)
    return Outcome({"loaded": len(tensors)}, frozenset({"params", "buffers"} | snapshot))


# --- the live graph ---------------------------------------------------------------------------------------------


def ensure_graph(s: LiveSession, *, with_loss: bool) -> bool:
    """Make the last output (and loss) live tensors with their graph; True when it had to replay."""
    rec = s.fwd
    assert rec is not None
    replayed = False
    if rec.output is None:
        rec.output = _replay(s, rec)
        replayed = True
    if with_loss and s.loss is not None and s.loss.value is None:
        spec = _LOSS.validate_python(s.loss.criterion)
        s.loss.value = build_loss(spec, s.device)(rec.output, s.loss.target.to(s.device))
    return replayed


def _live(tensor: torch.Tensor | None) -> torch.Tensor:
    """A record's output or loss, which ensure_graph has made live."""
    assert tensor is not None, "ensure_graph runs first"
    return tensor


def _replay(s: LiveSession, rec: ForwardRecord) -> torch.Tensor:
    """Run the recorded forward again exactly as it first ran, then put today's state back.

    Weights (or buffers) changed since (by a step, a state upload) are restored afterwards with
    in-place copies, which bump their version counters just as the change did, so a backward
    through this graph fails exactly when PyTorch's would.
    """
    params = dict(s.net.named_parameters())
    buffers = dict(s.net.named_buffers())
    stale = rec.params_stamp != s.stamps.get("params", 0)
    now_params = {k: p.detach().clone() for k, p in params.items()} if stale else {}
    now_buffers = {k: b.clone() for k, b in buffers.items()}
    with torch.no_grad():
        if stale:
            if rec.params_at_forward is None:
                raise Conflict(MODIFIED_MSG)
            for k, p in params.items():
                p.copy_(rec.params_at_forward[k])
        for k, b in buffers.items():
            b.copy_(rec.buffers_before[k])
    state_codec.set_rng_state(rec.rng_before, s.device)
    mode = s.net.training
    s.net.train(rec.training)
    try:
        out = run_net(s.net, to_device(rec.input, s.device))
    finally:
        s.net.train(mode)
    with torch.no_grad():
        # Buffers come out of the replay as they were after the first run; copying them anyway would
        # bump the version of running stats that BatchNorm saved, and break this graph's backward.
        for k, b in buffers.items():
            if not torch.equal(b, now_buffers[k]):
                b.copy_(now_buffers[k])
        for k, p in params.items() if stale else ():
            p.copy_(now_params[k])
    return out


def _keep_params_for_graph(s: LiveSession) -> set[str]:
    """Before the first in-place change of the weights after a forward, keep the weights it used."""
    rec = s.fwd
    if rec is None or rec.params_at_forward is not None or rec.params_stamp != s.stamps.get("params", 0):
        return set()
    rec.params_at_forward = {k: p.detach().clone() for k, p in s.net.named_parameters()}
    return {"fwd_params"}


# --- small helpers -----------------------------------------------------------------------------------------------


def _output_shape(s: LiveSession) -> list[int]:
    out = s.fwd.output if s.fwd else None
    if out is not None:
        return list(out.shape)
    return [batch_size(s.fwd.input), *s.meta["output_shape"]] if s.fwd else []


def _fn_name(t: torch.Tensor) -> str | None:
    return None if t.grad_fn is None else type(t.grad_fn).__name__


def _with_warnings(body: dict[str, Any], caught: list[warnings.WarningMessage]) -> dict[str, Any]:
    if caught:
        body["warnings"] = sorted({str(w.message).splitlines()[0] for w in caught})
    return body
