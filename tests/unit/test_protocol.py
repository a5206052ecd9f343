"""``gradserve.protocol``: what client and server share. It imports neither torch nor pydantic, its event
format reads back what the service writes, and its catalogue names are exactly the server's spec types."""

from __future__ import annotations

import subprocess
import sys
import typing

import torch
import torch.nn.functional as F

from gradserve.fx_catalogue import FUNCTION_OPS, METHOD_OPS
from gradserve.protocol import (
    JOB_STOPPED,
    JOB_TERMINAL,
    LOSS_FIELDS,
    MODULE_FIELDS,
    SWEEP_TERMINAL,
    JobStatus,
    SweepStatus,
    TrialState,
    codec,
    encode_event,
    parse_events,
    public_states,
)
from gradserve.remote_values import LOSSES
from models.spec.layers import LAYER_TYPES
from models.spec.losses import LOSS_TYPES


def test_the_protocol_imports_neither_torch_nor_pydantic() -> None:
    code = "import sys, gradserve.protocol; print(sorted(m for m in ('torch', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_states_and_their_ends() -> None:
    assert {"succeeded", "failed", "cancelled", "pruned"} == JOB_TERMINAL
    assert JOB_TERMINAL | {"paused"} == JOB_STOPPED and set(JobStatus) > JOB_STOPPED
    assert set(SweepStatus) - {"running"} == SWEEP_TERMINAL
    published = public_states()
    assert published["job"]["states"][:2] == ["queued", "running"]
    assert set(published["job"]["stopped"]) == JOB_STOPPED
    assert set(published["trial"]["terminal"]) == set(TrialState) - {"running"}


def test_events_read_back_as_written() -> None:
    written = b"retry: 1000\n\n: keep-alive\n\n" + encode_event("1-0", "metric", '{"step": 1}')
    written += encode_event("2-0", "state", '{"status": "succeeded"}')
    events = list(parse_events(written.decode().split("\n")))
    assert [(e.id, e.event, e.json()) for e in events] == [
        ("1-0", "metric", {"step": 1}),
        ("2-0", "state", {"status": "succeeded"}),
    ]
    # several data lines join; no event name is a "message"; a value keeps all but the first space
    joined = next(parse_events(["data: a", "data:  b", ""]))
    assert (joined.event, joined.data) == ("message", "a\n b")


def _literal(cls: type) -> str:
    (value,) = typing.get_args(cls.model_fields["type"].annotation)
    return str(value)


def test_every_module_layer_and_loss_is_named_once_on_both_sides() -> None:
    server_layers = {_literal(t): set(t.model_fields) for t in LAYER_TYPES}
    modules = {name for name in server_layers if name[0].isupper()}
    assert set(MODULE_FIELDS) == modules
    for name, fields in MODULE_FIELDS.items():
        assert set(fields) <= server_layers[name], (name, set(fields) - server_layers[name])
    functional = {spec for spec, _, _ in FUNCTION_OPS.values()} | {spec for spec, _, _ in METHOD_OPS.values()}
    assert functional <= set(server_layers), functional - set(server_layers)
    for spec, _, carried in [*FUNCTION_OPS.values(), *METHOD_OPS.values()]:
        assert set(carried) <= server_layers[spec], (spec, set(carried) - server_layers[spec])

    server_losses = {_literal(t): set(t.model_fields) for t in LOSS_TYPES}
    assert set(LOSS_FIELDS) == set(server_losses) == set(LOSSES.values())
    for name, fields in LOSS_FIELDS.items():
        assert set(fields) <= server_losses[name], (name, set(fields) - server_losses[name])
    assert LOSSES[F.cross_entropy] == "CrossEntropyLoss"


def test_a_binary_answer_reads_back_whole() -> None:
    out = torch.randn(2, 3)
    back = codec.unpack_answer(codec.pack_answer({"output": out, "shape": [2, 3], "grad": None}))
    assert torch.equal(back["output"], out) and back["shape"] == [2, 3] and back["grad"] is None
    tied = torch.ones(4)
    assert codec.safetensors_metadata(codec.pack_call({"a": tied, "b": tied}, {"k": 1})) == {"args": '{"k": 1}'}


def test_the_cli_has_an_exit_code_for_every_end() -> None:
    from gradserve.cli import EXIT, SWEEP_EXIT

    assert set(EXIT) == JOB_STOPPED and set(SWEEP_EXIT) == SWEEP_TERMINAL
