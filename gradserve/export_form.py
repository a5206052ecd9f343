"""Any ``nn.Module`` as the service's exported network form: ``torch.export`` in train and eval modes,
the graph as torch's own JSON, the tensors as safetensors, and a description of inputs and outputs.

Nothing here pickles: the server rebuilds the programs from JSON and safetensors alone. Outputs are
flattened to a tuple (a ``ModelOutput`` names a class the server must not import), and the tensor the
loss reads is chosen by its path (``['logits']``). The batch dimension is exported as dynamic, and so
is the second dimension of integer inputs (token ids), so one session serves any batch and length.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.export import Dim, ExportedProgram

from gradserve.errors import ExportError, SpecError
from gradserve.fx_spec import to_spec
from gradserve.protocol import codec

MAX_BATCH = 4096
_DTYPES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.bool: "bool",
}


@dataclass(frozen=True)
class ExportedUpload:
    """The three parts ``POST /v1/networks`` takes as a multipart form."""

    form: dict[str, Any]
    programs: dict[str, bytes]  # "train", "eval": torch's serialized ExportedProgram JSON
    weights: bytes  # safetensors: parameters, buffers and lifted constants by name

    def files(self) -> dict[str, tuple[str, bytes, str]]:
        parts = {
            "form": ("form.json", json.dumps(self.form).encode(), "application/json"),
            "weights": ("weights.safetensors", self.weights, codec.OCTET),
        }
        for mode, raw in self.programs.items():
            parts[f"{mode}_program"] = (f"{mode}_program.json", raw, "application/json")
        return parts


def catalogue_spec(module: nn.Module, format: str) -> dict[str, Any] | None:
    """The module's readable catalogue spec, or None when it travels as a torch.export program: asked for
    (``format="export"``), or beyond the catalogue under ``"auto"``. ``"spec"`` raises the catalogue's refusal."""
    if format not in ("auto", "spec", "export"):
        raise ValueError(f'format={format!r}: use "auto", "spec" or "export"')
    if format == "export":
        return None
    try:
        return to_spec(module)
    except SpecError:
        if format == "spec":
            raise
        return None


def named_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Positional and keyword inputs of ``module(...)`` by the forward's parameter names."""
    params = inspect.signature(module.forward).parameters
    try:
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
    except TypeError as exc:
        raise ExportError(f"{type(module).__name__}.forward does not take these inputs: {exc}") from exc
    flat: dict[str, Any] = {}
    for name, value in bound.items():
        kind = params[name].kind
        if kind == inspect.Parameter.VAR_POSITIONAL:
            raise ExportError(f"{type(module).__name__}.forward takes *{name}: pass its inputs by name")
        flat.update(value if kind == inspect.Parameter.VAR_KEYWORD else {name: value})
    out: dict[str, torch.Tensor] = {}
    for name, value in flat.items():
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"input '{name}' is a {type(value).__name__}; exported networks take tensors")
        if value.dtype not in _DTYPES:
            raise ExportError(f"input '{name}' is {value.dtype}; send one of {sorted(_DTYPES.values())}")
        if value.dim() == 0:
            raise ExportError(f"input '{name}' is a scalar; inputs are mini-batches, the batch dimension first")
        out[name] = value
    return out


def export_module(
    module: nn.Module, inputs: dict[str, torch.Tensor], output: str | int | None = None
) -> ExportedUpload:
    """Export ``module`` on ``inputs`` (a mini-batch each) in both modes; the module is left as it was."""
    examples = {k: _batch_of_two(v) for k, v in inputs.items()}
    dynamic: dict[str, Any] | None = _dynamic_shapes(module, examples)
    was_training = module.training
    programs: dict[str, ExportedProgram] = {}
    rng = torch.get_rng_state()
    try:
        for mode in ("train", "eval"):
            module.train(mode == "train")
            try:
                try:
                    programs[mode] = torch.export.export(module, (), examples, dynamic_shapes=dynamic, strict=False)
                except AssertionError:
                    if not _takes_var_keyword(module):
                        raise
                    # torch 2.13 cannot mark inputs of a ``forward(*args, **kwargs)`` (peft's PeftModel) dynamic:
                    # such a module is exported at the batch it was called with, and serves that batch size.
                    examples, dynamic = dict(inputs), None
                    programs[mode] = torch.export.export(module, (), examples, strict=False)
            except Exception as exc:  # torch's own reason, first lines: what cannot be captured and where
                reason = "\n".join(str(exc).strip().splitlines()[:6])
                raise ExportError(
                    f"torch.export cannot capture {type(module).__name__} in {mode} mode: {reason}"
                ) from exc
    finally:
        module.train(was_training)
        torch.set_rng_state(rng)
    paths = _output_paths(programs["train"])
    chosen = _choose_output(paths, output)
    tied = _tied(module)
    state = {k: v for k, v in module.state_dict(keep_vars=True).items() if k not in tied}
    # Non-persistent buffers (BERT's position_ids) are not in state_dict, but the program reads them.
    state.update({k: v for k, v in module.named_buffers() if k not in state and k not in tied})
    for ep in programs.values():
        state.update({k: v for k, v in ep.constants.items() if isinstance(v, torch.Tensor)})
    form = {
        "name": type(module).__name__,
        "repr": repr(module),
        "inputs": [_describe(name, t, examples[name], dynamic is not None) for name, t in inputs.items()],
        "outputs": paths,
        "output": chosen,
        "frozen": [n for n, p in module.named_parameters() if not p.requires_grad],
        "tied": tied,
        "state_order": list(module.state_dict()),
        "batch": None if dynamic is not None else int(next(iter(inputs.values())).shape[0]),
    }
    return ExportedUpload(form, {mode: _serialize(ep) for mode, ep in programs.items()}, codec.to_safetensors(state))


def _dynamic_shapes(module: nn.Module, examples: dict[str, torch.Tensor]) -> dict[str, Any]:
    """export's ``dynamic_shapes``, keyed as ``forward``'s signature binds the inputs (``**kwargs`` nests them)."""
    params = inspect.signature(module.forward).parameters
    var_kw = next((n for n, p in params.items() if p.kind == inspect.Parameter.VAR_KEYWORD), None)
    out: dict[str, Any] = {}
    for name, t in examples.items():
        if name in params or var_kw is None:
            out[name] = _dynamic_dims(t)
        else:
            out.setdefault(var_kw, {})[name] = _dynamic_dims(t)
    return out


def _batch_of_two(t: torch.Tensor) -> torch.Tensor:
    # export specializes a dimension of size 1; two samples keep the batch symbolic.
    return t.expand(2, *t.shape[1:]).clone() if t.shape[0] == 1 else t


def _dynamic_dims(t: torch.Tensor) -> dict[int, Any]:
    dims: dict[int, Any] = {0: Dim("batch", min=1, max=MAX_BATCH)}
    if not t.is_floating_point() and t.dim() >= 2:
        dims[1] = Dim.AUTO  # a sequence of token ids: variable where the model allows it
    return dims


def _takes_var_keyword(module: nn.Module) -> bool:
    return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in inspect.signature(module.forward).parameters.values())


def _describe(name: str, original: torch.Tensor, example: torch.Tensor, dynamic_dims: bool) -> dict[str, Any]:
    dynamic = _dynamic_dims(example) if dynamic_dims else {}
    return {
        "name": name,
        "dtype": _DTYPES[original.dtype],
        "shape": [None if i in dynamic else int(d) for i, d in enumerate(example.shape)][1:],
        "example": [int(d) for d in example.shape[1:]],
    }


def _output_paths(ep: ExportedProgram) -> list[str]:
    spec = ep.module_call_graph[0].signature
    assert spec is not None
    n = spec.out_spec.num_leaves
    leaves = pytree.tree_flatten_with_path(pytree.tree_unflatten(list(range(n)), spec.out_spec))[0]
    return [pytree.keystr(path) or "output" for path, _ in leaves]


def _choose_output(paths: list[str], output: str | int | None) -> int:
    if isinstance(output, int):
        if not 0 <= output < len(paths):
            raise ExportError(f"output={output}: the model returns {len(paths)} tensors: {paths}")
        return output
    if output is not None:
        for i, path in enumerate(paths):
            if path in (output, f"['{output}']", f".{output}"):
                return i
        raise ExportError(f"output={output!r} is not one of the model's outputs: {paths}")
    return next((i for i, p in enumerate(paths) if "logits" in p), 0)


def _tied(module: nn.Module) -> dict[str, str]:
    """Names that share a tensor with an earlier name (tied embeddings): sent once, shared again there."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        owner = first.setdefault(id(t), name)
        if owner != name:
            tied[name] = owner
    return tied


def _serialize(ep: ExportedProgram) -> bytes:
    from torch._export.serde.serialize import serialize  # torch's export serializer; pinned by a test

    signature = ep.module_call_graph[0].signature
    assert signature is not None
    signature.out_spec = pytree.tree_structure(tuple(range(signature.out_spec.num_leaves)))
    ep._guards_code = []  # the server checks inputs itself and never runs guard code it was sent
    raw: bytes = serialize(ep).exported_program
    return raw
