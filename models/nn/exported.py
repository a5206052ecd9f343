"""Exported programs as trainable modules: deserialize without unpickling, and run train and eval graphs
over one set of parameters.

An exported program is captured in one mode (dropout and batch norm are different ops in training and
in evaluation), so a network carries a train program and, optionally, an eval one. ``ExportedNet`` owns
the state, in the user's module hierarchy, so ``named_parameters``, ``state_dict`` and optimizers see the
user's names; both programs read that same state, and ``net.train()`` / ``net.eval()`` pick the program.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import torch
from torch import nn
from torch._export.serde.serialize import SerializedArtifact, deserialize
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.export import ExportedProgram
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from models.errors import InvalidInput, Loc, first_line
from models.nn.program_check import ProgramFacts
from models.spec.exported import ExportedForm
from models.wire.tensors import DTYPE_NAMES, DTYPES, dtype_name

Mode = Literal["train", "eval"]
# torch's deserializer keeps its current instance in a module global: two threads at once trip over each other.
_DESERIALIZING = threading.Lock()
PROGRAM_CACHE = 8
_PROGRAMS: OrderedDict[str, ExportedProgram] = OrderedDict()
PROBE_BATCH = 2
# torch's serialized ScalarType codes (torch/_export/serde/schema.py), for checking weights' dtypes.
_SCALAR_TYPES = {
    1: torch.uint8,
    3: torch.int16,
    4: torch.int32,
    5: torch.int64,
    6: torch.float16,
    7: torch.float32,
    8: torch.float64,
    12: torch.bool,
    13: torch.bfloat16,
}


@dataclass(frozen=True)
class Program:
    """A checked program of one mode."""

    mode: Mode
    facts: ProgramFacts


def tensor_specs(facts: ProgramFacts) -> dict[str, tuple[list[int], torch.dtype | None]]:
    """The shape and dtype the graph declares for each state tensor, by its state name."""
    gm = facts.doc["graph_module"]
    values = gm["graph"].get("tensor_values") or {}
    out: dict[str, tuple[list[int], torch.dtype | None]] = {}
    for spec in gm["signature"].get("input_specs") or []:
        kind, body = next(iter(spec.items()))
        if kind == "user_input":
            continue
        name = body.get({"parameter": "parameter_name", "buffer": "buffer_name"}.get(kind, "tensor_constant_name"))
        meta = values.get((body.get("arg") or {}).get("name"))
        if not isinstance(meta, dict):
            raise InvalidInput(f"the program declares no shape for its {kind} '{name}'", ("body", "graph_module"))
        sizes = [s.get("as_int", -1) for s in meta["sizes"]]
        dtype = meta.get("dtype")
        out[name] = (sizes, _SCALAR_TYPES.get(dtype) if isinstance(dtype, int) else None)
    return out


def check_weights(form: ExportedForm, programs: list[Program], tensors: Mapping[str, torch.Tensor], loc: Loc) -> None:
    """Every state tensor the programs read is in the weights file, shaped and typed as the graph says."""
    for program in programs:
        for name, (shape, dtype) in tensor_specs(program.facts).items():
            owner = form.tied.get(name, name)
            got = tensors.get(owner)
            if got is None:
                raise InvalidInput(
                    f"the {program.mode} program reads '{name}', which the weights file does not hold", (*loc, name)
                )
            if list(got.shape) != shape or (dtype is not None and got.dtype != dtype):
                want = f"{shape} {DTYPE_NAMES[dtype] if dtype is not None else ''}"
                raise InvalidInput(
                    f"weights '{owner}' are {list(got.shape)} {dtype_name(got)}, but the {program.mode} program "
                    f"declares {want}",
                    (*loc, owner),
                )


def load_program(program: Program, form: ExportedForm, loc: Loc) -> ExportedProgram:
    """torch's deserializer on a checked program, over placeholder tensors on the meta device (each network
    built from it gets its own, ``_own_state``): no bytes reach ``torch.load``. Deserializing costs seconds
    for a transformer (sympy parses every symbolic size), so each process keeps the last few programs."""
    digest = hashlib.sha256(orjson.dumps(program.facts.doc)).hexdigest()
    with _DESERIALIZING:
        cached = _PROGRAMS.get(digest)
        if cached is not None:
            _PROGRAMS.move_to_end(digest)
            return cached
    facts = program.facts
    state = empty_state(form, [program], "meta")
    state_dict: dict[str, torch.Tensor] = {n: nn.Parameter(state[form.tied.get(n, n)]) for n in facts.parameters}
    state_dict.update({n: state[form.tied.get(n, n)] for n in facts.buffers if n not in facts.transient})
    constants = {n: state[n] for n in (*facts.constants, *facts.transient)}
    # Tensors, not bytes: torch's deserializer then skips torch.load (whose fallback unpickles) entirely.
    artifact = SerializedArtifact(orjson.dumps(facts.doc), state_dict, constants, b"")  # type: ignore[arg-type]
    try:
        with _DESERIALIZING:
            ep = deserialize(artifact)
            _PROGRAMS[digest] = ep
            while len(_PROGRAMS) > PROGRAM_CACHE:
                _PROGRAMS.popitem(last=False)
            return ep
    except Exception as exc:  # torch raises assorted types for a malformed program
        raise InvalidInput(f"the {program.mode} program cannot be read: {first_line(exc)}", loc) from exc


def _own_state(
    net: nn.Module,
    programs: dict[Mode, nn.Module],
    facts: list[ProgramFacts],
    form: ExportedForm,
    state: Mapping[str, torch.Tensor],
) -> None:
    """Give the network its own tensors from ``state``, in place of the cached program's placeholders: one
    Parameter per owner (tied names share it, as in the user's module), frozen ones without grad."""
    frozen = set(form.frozen)
    made: dict[str, torch.Tensor] = {}
    for prefix, module in net.named_modules():
        for kind in ("_parameters", "_buffers"):
            slots: dict[str, torch.Tensor | None] = getattr(module, kind)
            for key in list(slots):
                full = f"{prefix}.{key}" if prefix else key
                owner = form.tied.get(full, full)
                if owner not in made:
                    value = state[owner]
                    made[owner] = (
                        nn.Parameter(value, requires_grad=owner not in frozen) if kind == "_parameters" else value
                    )
                slots[key] = made[owner]
    for gm in programs.values():  # lifted constants: plain attributes of each program
        for name in {n for f in facts for n in f.constants}:
            *path, last = name.split(".")
            holder: Any = gm
            for part in path:
                holder = getattr(holder, part)
            if hasattr(holder, last):
                setattr(holder, last, state[name])


class ExportedNet(nn.Module):
    """The user's network as exported programs over one set of parameters and buffers."""

    def __init__(
        self, name: str, text: str, programs: dict[Mode, nn.Module], output: int, inputs: tuple[str, ...]
    ) -> None:
        super().__init__()
        train = programs["train"]
        # The train program's state containers become ours; the eval program is pointed at the same ones, so
        # one tensor is one parameter whichever program runs, and .to(), optimizers and state_dict see it once.
        holders = {n.split(".")[0] for n in (*train.state_dict(keep_vars=True), *dict(train.named_parameters()))}
        self._modules.update({k: m for k, m in train._modules.items() if k in holders})
        self._parameters = train._parameters
        self._buffers = train._buffers
        for gm in programs.values():
            if gm is not train:
                gm._modules.update(self._modules)
                gm._parameters = train._parameters
                gm._buffers = train._buffers
        self.__dict__["_programs"] = programs
        self.__dict__["_name"] = name
        self.__dict__["_text"] = text
        self.__dict__["_output"] = output
        self.__dict__["_inputs"] = inputs

    def forward(self, *args: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        """``net(x)`` (a job's batches) or ``net(input_ids=..., attention_mask=...)``, as the module took them."""
        inputs = {**dict(zip(self.__dict__["_inputs"], args, strict=False)), **inputs}
        programs: dict[Mode, nn.Module] = self.__dict__["_programs"]
        program = programs["train" if self.training or "eval" not in programs else "eval"]
        out = program(**inputs)
        if isinstance(out, (tuple, list)):
            out = out[self.__dict__["_output"]]
        assert isinstance(out, torch.Tensor), "the client flattens outputs to tensors"
        return out

    @property
    def has_eval(self) -> bool:
        return "eval" in self.__dict__["_programs"]

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> ExportedNet:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # unannotated in torch
        for gm in self.__dict__["_programs"].values():  # lifted constants are plain attributes of each program
            for key, value in list(vars(gm).items()):
                if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                    setattr(gm, key, fn(value))
        return self

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return str(self.__dict__["_text"])


def build_exported(
    form: ExportedForm, programs: list[Program], state: Mapping[str, torch.Tensor], loc: Loc = ("body",)
) -> ExportedNet:
    """The network on the device ``state`` lives on."""
    modules: dict[Mode, nn.Module] = {}
    for program in programs:
        ep = load_program(program, form, loc)
        try:
            with _DESERIALIZING:  # a cached program is shared: one unlifting of it at a time
                modules[program.mode] = ep.module()
        except Exception as exc:
            raise InvalidInput(f"the {program.mode} program cannot be built: {first_line(exc)}", loc) from exc
    if "train" not in modules:
        raise InvalidInput("an exported network needs its train program", loc)
    net = ExportedNet(form.name, form.repr, modules, form.output, tuple(i.name for i in form.inputs))
    _own_state(net, modules, [p.facts for p in programs], form, state)
    return net


def empty_state(form: ExportedForm, programs: list[Program], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Uninitialised tensors shaped as the programs declare (weights are loaded over them)."""
    state: dict[str, torch.Tensor] = {}
    for program in programs:
        for name, (shape, dtype) in tensor_specs(program.facts).items():
            owner = form.tied.get(name, name)
            if owner not in state:
                state[owner] = torch.zeros(shape, dtype=dtype or torch.float32, device=device)
    return state


def example_inputs(form: ExportedForm, batch: int) -> dict[str, torch.Tensor]:
    """Zeros shaped as the exported example, a batch of ``batch`` (made under fake tensors by ``probe``)."""
    return {i.name: torch.zeros((batch, *i.example), dtype=DTYPES[i.dtype]) for i in form.inputs}


def state_numel(form: ExportedForm, programs: list[Program]) -> int:
    seen: dict[str, int] = {}
    for program in programs:
        for name, (shape, _) in tensor_specs(program.facts).items():
            if name in program.facts.parameters:
                seen.setdefault(form.tied.get(name, name), math.prod(shape))
    return sum(seen.values())


class _CountBytes(TorchDispatchMode):  # type: ignore[no-untyped-call]  # unannotated in torch
    """Sums the bytes of every op's outputs: the activation memory a forward holds, at most."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.total += leaf.numel() * leaf.element_size()
        return out


def probe(form: ExportedForm, programs: list[Program], loc: Loc) -> tuple[ExportedNet, list[int], int]:
    """Build on the meta device and run the train program on a batch of two: the network, its output's
    per-sample shape and the activation bytes per sample."""
    # Fake tensors, not the meta device: a program may make tensors on "cpu" (an LSTM's zero state), and
    # fake ones keep their device while allocating nothing.
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        state = empty_state(form, programs, "cpu")
        inputs = example_inputs(form, form.batch or PROBE_BATCH)
    net = build_exported(form, programs, state, loc)
    counter = _CountBytes()
    try:
        if net.has_eval:  # run too: it is what held-out evaluation and eval() sessions run
            with fake, torch.no_grad():
                net.eval()(**inputs)
        with fake, counter:
            out = net.train()(**inputs)
    except Exception as exc:
        mode = "train" if net.training else "eval"
        raise InvalidInput(f"the {mode} program fails on its own example inputs: {first_line(exc)}", loc) from exc
    batch = form.batch or PROBE_BATCH
    if out.dim() == 0 or out.shape[0] != batch:
        raise InvalidInput(
            f"output {form.outputs[form.output]} is shaped {list(out.shape)} for a batch of {batch}: "
            "the loss needs the batch dimension first",
            loc,
        )
    return net, list(out.shape[1:]), -(-counter.total // batch)
