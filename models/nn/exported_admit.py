"""Admission of an exported network: its three parts checked, its state read, its cost estimated.

Everything a client sent passes through here before any session or job sees it: the description by
pydantic, each program by ``program_check`` (then torch's deserializer, on the meta device), the weights
as safetensors against the shapes the graph declares, and the parameters and activation memory against
the limits in settings, as a catalogue spec is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import torch
from pydantic import ValidationError

from models.errors import InvalidInput, Loc
from models.nn.build import NetworkSummary, check_activation_memory
from models.nn.exported import (
    ExportedNet,
    Mode,
    Program,
    build_exported,
    check_weights,
    empty_state,
    probe,
    state_numel,
)
from models.nn.program_check import MALFORMED, check_program, malformed
from models.settings import Settings, get_settings
from models.spec.exported import ExportedForm
from models.wire.tensors import from_safetensors

MODES: tuple[Mode, ...] = ("train", "eval")


@dataclass(frozen=True)
class Admitted:
    form: ExportedForm
    programs: dict[Mode, bytes]  # the checked, cleaned JSON: what workers deserialize
    summary: NetworkSummary


def parse_form(raw: bytes | str, loc: Loc) -> ExportedForm:
    try:
        return ExportedForm.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = (*loc, *err["loc"])
        raise InvalidInput(f"form: {err['msg']} at {'.'.join(map(str, err['loc'])) or 'the top'}", where) from exc


def read_programs(raw: dict[Mode, bytes], settings: Settings, loc: Loc = ("body",)) -> list[Program]:
    """Check each program's JSON; the train program is required, the eval one optional."""
    if "train" not in raw:
        raise InvalidInput("an exported network needs its train program (the part 'train_program')", loc)
    return [
        Program(
            mode,
            check_program(
                raw[mode],
                max_bytes=settings.max_program_bytes,
                max_nodes=settings.max_graph_nodes,
                loc=(*loc, f"{mode}_program"),
            ),
        )
        for mode in MODES
        if mode in raw
    ]


def stored_parts(meta: dict[str, Any]) -> tuple[ExportedForm, list[Program]]:
    """A stored exported network's description and programs (``{"form", "programs": {mode: JSON}}``), checked
    again: the API admitted them, but a worker deserializes nothing it has not checked itself."""
    form = ExportedForm.model_validate(meta["form"])
    raw: dict[Mode, bytes] = {m: meta["programs"][m].encode() for m in MODES if m in meta["programs"]}
    return form, read_programs(raw, get_settings())


@dataclass(frozen=True)
class Built:
    """A stored exported network, built."""

    net: ExportedNet
    form: ExportedForm
    fixed: dict[str, torch.Tensor]  # non-persistent buffers and lifted constants: no state_dict holds them


def build_stored(meta: dict[str, Any], weights: Mapping[str, torch.Tensor] | None) -> Built:
    """The network of ``{"form", "programs"}`` on the CPU, over ``weights`` (uninitialised where they are silent)."""
    form, programs = stored_parts(meta)
    state = empty_state(form, programs, "cpu") | dict(weights or {})
    names = sorted({n for p in programs for n in (*p.facts.transient, *p.facts.constants)})
    return Built(build_exported(form, programs, state), form, {n: state[n] for n in names})


def stored_form(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored network's form whole: its ``repr`` is kept once, as the document's public field."""
    return {**doc["form"], "repr": doc["repr"]}


def admit(form_raw: bytes | str, programs_raw: dict[Mode, bytes], weights: bytes, settings: Settings) -> Admitted:
    """Check an upload whole; answer what is stored."""
    form = parse_form(form_raw, ("body", "form"))
    try:
        return _admit(form, programs_raw, weights, settings)
    except MALFORMED as exc:  # a document of the wrong shape that the checks let through: still the client's
        raise malformed(exc, ("body",)) from exc


def _admit(form: ExportedForm, programs_raw: dict[Mode, bytes], weights: bytes, settings: Settings) -> Admitted:
    programs = read_programs(programs_raw, settings)
    state = from_safetensors(weights, loc=("body", "weights"))
    numel = state_numel(form, programs)
    if numel > settings.max_parameters:
        raise InvalidInput(
            f"the network has {numel:,} parameters; the limit is {settings.max_parameters:,} "
            "(GRADSERVE_MAX_PARAMETERS)",
            ("body", "weights"),
        )
    check_weights(form, programs, state, ("body", "weights"))
    summary = summarize(form, programs, ("body", "train_program"), settings)
    cleaned = {p.mode: orjson.dumps(p.facts.doc) for p in programs}
    return Admitted(form, cleaned, summary)


def summarize(form: ExportedForm, programs: list[Program], loc: Loc, settings: Settings) -> NetworkSummary:
    net, output_shape, per_sample = probe(form, programs, loc)
    check_activation_memory(per_sample, 1, settings, loc)
    params: list[dict[str, Any]] = [
        {"name": n, "shape": list(p.shape), "numel": p.numel()} for n, p in net.named_parameters()
    ]
    return NetworkSummary(
        repr=form.repr,
        parameters=params,
        num_parameters=len(params),
        num_elements=sum(int(p["numel"]) for p in params),
        output_shape=output_shape,
        activation_bytes_per_sample=per_sample,
    )
