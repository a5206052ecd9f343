"""Pure pieces of the client: its public surface, the wire form, event parsing, specs from torch objects."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import torch
from torch import nn

import gradserve
from gradserve.cli import _global_first
from gradserve.fx_spec import optimizer_spec
from gradserve.jobs import criterion_spec
from gradserve.protocol import codec
from gradserve.remote_values import _criterion
from models.wire.session import read_binary_body


def test_public_surface() -> None:
    assert sorted(gradserve.__all__) == [
        "APIError",
        "AsyncClient",
        "Client",
        "ExportError",
        "GradserveError",
        "JobFailed",
        "SpecError",
        "SweepEnded",
        "to_spec",
    ]


def test_a_call_body_reads_back_on_the_server_side() -> None:
    x = torch.randn(2, 3, dtype=torch.float64)
    tensors, args = read_binary_body(codec.pack_call({"input": x}, {"retain_graph": True}), ("input",))
    assert torch.equal(tensors["input"], x) and args == {"retain_graph": True}


def test_specs_from_torch_objects() -> None:
    assert optimizer_spec(torch.optim.SGD, {"lr": 0.1, "betas": (0.9, 0.99)}) == {
        "type": "SGD",
        "lr": 0.1,
        "betas": [0.9, 0.99],
    }
    assert criterion_spec(nn.CrossEntropyLoss(label_smoothing=0.1))["label_smoothing"] == 0.1
    loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0]), reduction="sum")
    captured = {}

    class Spy:
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            captured["spec"] = _criterion(func, args, kwargs or {})[0]
            return None

    loss(Spy(), torch.tensor([0, 1]))
    assert captured["spec"] == {
        "type": "CrossEntropyLoss",
        "reduction": "sum",
        "weight": [1.0, 2.0],
        "ignore_index": -100,
        "label_smoothing": 0.0,
    }


def test_url_and_key_options_anywhere() -> None:
    assert _global_first(["ls", "--url", "http://h:1", "--json", "--api-key=k"]) == [
        "--url",
        "http://h:1",
        "--api-key=k",
        "ls",
        "--json",
    ]


def test_the_client_imports_none_of_the_server() -> None:
    probe = (
        "import sys, gradserve, gradserve.remote, gradserve.jobs, gradserve.jobs_async, gradserve.cli;"
        "server = ('api', 'worker', 'models', 'pydantic', 'fastapi', 'celery', 'redis', 'orjson');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in server))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_busy_session_call_is_retried_under_one_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) < 3:
            return httpx.Response(503 if len(seen) == 1 else 504, headers={"Retry-After": "0"}, json={"detail": "busy"})
        return httpx.Response(200, json={"ok": True})

    with gradserve.Client("http://gradserve.test", transport=httpx.MockTransport(answer)) as c:
        assert c.session_call("POST", "/v1/sessions/s/step").json() == {"ok": True}
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1


def test_fork_changes_fold_an_optimizer_class_and_its_lr_and_keep_a_removed_scheduler() -> None:
    from gradserve.jobs import Dataset, fork_changes

    assert fork_changes({"lr": 0.01, "epochs": 9}) == {"lr": 0.01, "epochs": 9}
    changed = fork_changes({"optimizer": torch.optim.Adam, "lr": 1e-3, "lr_scheduler": None})
    assert changed == {"optimizer": {"type": "Adam", "lr": 1e-3}, "lr_scheduler": None}
    import pytest

    with pytest.raises(ValueError, match="give lr once"):
        fork_changes({"optimizer": {"type": "Adam", "lr": 0.002}, "lr": 1e-3})
    data = Dataset("data_1", 10, {"inputs": {"shape": [10, 4]}})
    assert fork_changes({"dataset": data}) == {"dataset": {"source": "upload", "id": "data_1"}}


def test_fork_step_defaults_to_the_last_checkpoint_and_says_when_there_is_none() -> None:
    import pytest

    from gradserve.errors import GradserveError
    from gradserve.jobs import fork_step

    assert fork_step({"id": "j", "status": "succeeded", "checkpoint_step": 40}, None) == 40
    assert fork_step({"id": "j", "status": "running", "checkpoint_step": 40}, 12) == 12
    with pytest.raises(GradserveError, match="no checkpoint yet"):
        fork_step({"id": "j", "status": "queued", "checkpoint_step": None}, None)


def test_sweep_body_picks_the_direction_from_the_metric() -> None:
    from gradserve.sweeps import sweep_body

    space = {"optimizer.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}
    body = sweep_body({"steps": 5}, space, objective="val_loss", pruner="none", max_trials=3, name="s")
    assert body["objective"] == {"metric": "val_loss", "direction": "minimize"}
    assert body["pruner"] == {"type": "none"} and body["max_trials"] == 3 and body["name"] == "s"
    assert sweep_body({}, space)["objective"] == {"metric": "val_accuracy", "direction": "maximize"}


def test_sweep_table_marks_each_state_and_the_best_trial() -> None:
    import io

    from rich.console import Console

    from gradserve.sweep_view import final_line, table

    trial = {"job_id": "job_a", "params": {"optimizer.lr": 0.0123456}, "error": None}
    doc = {
        "id": "swp_1",
        "name": None,
        "status": "succeeded",
        "max_trials": 3,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "trials": [
            {**trial, "number": 0, "state": "complete", "value": 0.9, "intermediate": {"1": 0.5, "2": 0.9}},
            {**trial, "number": 1, "state": "pruned", "value": None, "intermediate": {"1": 0.1}},
            {**trial, "number": 2, "state": "failed", "value": None, "job_id": None, "error": "bad lr"},
        ],
        "best": {**trial, "number": 0, "value": 0.9},
    }
    screen = io.StringIO()
    Console(file=screen, width=160).print(table(doc))
    drawn = screen.getvalue()
    assert "1 complete, 1 pruned, 1 failed" in drawn and "0.9 @ 2" in drawn and "bad lr" in drawn
    assert "optimizer.lr=0.01235" in drawn
    assert final_line(doc).endswith("best val_accuracy 0.9 (trial 0: optimizer.lr=0.01235)")


def test_the_client_checks_layer_names_as_the_spec_does() -> None:
    from gradserve.fx_spec import IDENTIFIER
    from models.spec.types import LAYER_NAME

    assert IDENTIFIER.pattern == LAYER_NAME


def test_a_request_file_that_cannot_be_read_is_a_usage_error_not_a_traceback(tmp_path: object) -> None:
    from pathlib import Path

    import click
    import pytest

    from gradserve.cli import read_job_file

    folder = Path(str(tmp_path))
    cases = {"bad.yaml": b"template: [unclosed\n  x: {", "bin.json": b"\xff\xfe\x00binary", "s.toml": b"a = 1"}
    for name, raw in cases.items():
        (folder / name).write_bytes(raw)
        with pytest.raises(click.BadParameter, match="is not valid"):
            read_job_file(folder / name)
    (folder / "list.json").write_text("[1]")
    with pytest.raises(click.BadParameter, match="one object"):
        read_job_file(folder / "list.json")


def test_a_jobs_final_line_ends_with_its_overall_rate() -> None:
    from gradserve.progress import final_line

    doc = {"id": "job_1", "status": "succeeded", "step": 69, "total_steps": 69, "loss": 0.25}
    rates = {"samples_per_s": 11428.0, "overall_samples_per_s": 512.4}
    assert final_line({**doc, **rates}).endswith("loss 0.2500  512 samples/s")
    assert final_line(doc).endswith("loss 0.2500")


def test_a_dataset_id_is_an_uploaded_dataset() -> None:
    from gradserve.jobs import fork_changes, job_request

    spec = {"name": "Tiny", "input_shape": [4], "layers": [{"type": "Linear", "in_features": 4, "out_features": 2}]}
    body, _ = job_request(spec, "data_0123", batch_size=8, steps=1)
    assert body["dataset"] == {"source": "upload", "id": "data_0123"}
    assert fork_changes({"dataset": "data_0123"}) == {"dataset": {"source": "upload", "id": "data_0123"}}


def test_a_frame_without_pandas_says_which_extra_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradserve.jobs import metrics_frame

    monkeypatch.setitem(sys.modules, "pandas", None)  # what an environment without pandas imports
    with pytest.raises(ImportError, match=r"pip install 'gradserve\[pandas\]'"):
        metrics_frame({"step": [1, 2], "loss": [0.5, 0.4]})


def test_a_paused_jobs_final_line_names_its_breakpoint() -> None:
    from gradserve.progress import final_line

    bp = {"rule": "nonfinite", "step": 7, "value": "inf", "parameter": "fc2.bias"}
    doc = {"id": "job_1", "status": "paused", "step": 6, "total_steps": 60, "breakpoint": bp}
    assert final_line(doc).endswith("breakpoint nonfinite at step 7: inf (fc2.bias)")
    assert "breakpoint" not in final_line({**doc, "status": "succeeded"})
