"""Hostile exported networks: each is a 4xx that names what is wrong, and nothing a client sent is ever
unpickled or evaluated (each payload would create a marker file; the test proves it never appears)."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gradserve.export_form import ExportedUpload, export_module
from tests.conftest import Service

pytestmark = pytest.mark.integration


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _upload() -> ExportedUpload:
    torch.manual_seed(0)
    return export_module(Small(), {"x": torch.randn(3, 4)})


def _post(service: Service, upload: ExportedUpload, train: bytes | None = None) -> tuple[int, str]:
    files = upload.files()
    if train is not None:
        files["train_program"] = ("train_program.json", train, "application/json")
    r = service.client("alice").post("/v1/networks/exported", files=files)
    return r.status_code, r.text


def _with_target(raw: bytes, target: str) -> bytes:
    doc = json.loads(raw)
    nodes = doc["graph_module"]["graph"]["nodes"]
    relu = next(n for n in nodes if "relu" in n["target"])
    relu["target"] = target
    return json.dumps(doc).encode()


def test_a_clean_upload_is_admitted(service: Service) -> None:
    status, text = _post(service, _upload())
    assert status == 201, text


@pytest.mark.parametrize(
    "target",
    ["torch.ops.mylib.evil.default", "torch.serialization.load", "builtins.eval", "torch.ops.aten.from_file.default"],
)
def test_an_op_outside_the_allowlist_is_refused_by_name(service: Service, target: str) -> None:
    upload = _upload()
    status, text = _post(service, upload, _with_target(upload.programs["train"], target))
    assert status == 422, text
    assert target in text and "relu" in text  # the op and the node


def test_a_symbolic_expression_that_would_run_code_never_runs(service: Service, tmp_path: Path) -> None:
    marker = tmp_path / "sympify-ran"
    upload = export_module(Small(), {"x": torch.randn(3, 4)})
    doc = json.loads(upload.programs["train"])
    doc["range_constraints"][f"__import__('os').system('touch {marker}')"] = {"min_val": 1, "max_val": 2}
    status, text = _post(service, upload, json.dumps(doc).encode())
    assert status == 422 and "symbolic shape expression" in text, text
    assert not marker.exists()


def test_a_pt2_archive_with_a_pickle_is_refused_and_never_unpickled(service: Service, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:  # what torch.export.save writes, with a poisoned pickle inside
        z.writestr("archive/data.pkl", pickle.dumps(_Evil(marker)))
        z.writestr("archive/version", "1")
    upload = _upload()
    status, text = _post(service, upload, archive.getvalue())
    assert status == 422 and "not JSON" in text, text
    files = upload.files()
    files["weights"] = ("weights.pt", pickle.dumps(_Evil(marker)), "application/octet-stream")
    r = service.client("alice").post("/v1/networks/exported", files=files)
    assert r.status_code == 422, r.text
    assert not marker.exists()


def test_guard_code_and_custom_objects_are_refused(service: Service) -> None:
    upload = _upload()
    doc = json.loads(upload.programs["train"])
    doc["guards_code"] = ["__import__('os').system('true')"]
    status, text = _post(service, upload, json.dumps(doc).encode())
    assert status == 422 and "guards_code" in text, text


def test_a_graph_over_the_node_bound_is_a_413(service: Service) -> None:
    upload = _upload()
    doc = json.loads(upload.programs["train"])
    tiny = {"target": "torch.ops.aten.relu.default", "inputs": [], "outputs": [], "metadata": {}, "name": "n"}
    doc["graph_module"]["graph"]["nodes"] = [tiny] * 50_001
    status, text = _post(service, upload, json.dumps(doc).encode())
    assert status == 413 and "nodes" in text, text


def test_weights_that_do_not_fit_the_graph_name_the_tensor(service: Service) -> None:
    upload = _upload()
    from gradserve.protocol import codec

    bad = ExportedUpload(upload.form, upload.programs, codec.to_safetensors({"fc.weight": torch.zeros(3, 3)}))
    status, text = _post(service, bad)
    assert status == 422 and "fc.weight" in text, text


def test_an_operator_passed_as_an_argument_is_refused(service: Service) -> None:
    """A higher-order op calls the function it is given: an operator argument would bypass the allowlist
    (here: read /etc/passwd through aten.from_file)."""
    upload = _upload()
    doc = json.loads(upload.programs["eval"])
    nodes = doc["graph_module"]["graph"]["nodes"]
    read = {
        "target": "torch.ops.higher_order.wrap_with_set_grad_enabled",
        "name": "ff",
        "inputs": [
            {"name": "", "arg": {"as_bool": False}, "kind": 1},
            {"name": "", "arg": {"as_operator": "torch.ops.aten.from_file.default"}, "kind": 1},
            {"name": "", "arg": {"as_string": "/etc/passwd"}, "kind": 1},
        ],
        "outputs": [{"as_tensor": {"name": "ff"}}],
        "metadata": {},
    }
    doc["graph_module"]["graph"]["nodes"] = [read, *nodes]
    files = upload.files()
    files["eval_program"] = ("eval_program.json", json.dumps(doc).encode(), "application/json")
    r = service.client("alice").post("/v1/networks/exported", files=files)
    assert r.status_code == 422 and "'as_operator'" in r.text and "ff" in r.text, r.text


@pytest.mark.parametrize(
    "expr", ["9**9**9", "Float(1, 999999999)", "Integer(99999999999999999999)", "Symbol('u999999999')"]
)
def test_symbolic_strings_that_would_spin_a_core_are_refused(service: Service, expr: str) -> None:
    upload = _upload()
    doc = json.loads(upload.programs["train"])
    values = doc["graph_module"]["graph"]["tensor_values"]
    next(iter(values.values()))["sizes"][0] = {"as_expr": {"expr_str": expr, "hint": {"as_int": 3}}}
    status, text = _post(service, upload, json.dumps(doc).encode())
    assert status == 422 and "symbolic shape expression" in text, text


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["graph_module"]["graph"]["tensor_values"].update(
            {key: {"sizes": 5} for key in d["graph_module"]["graph"]["tensor_values"]}
        ),
        lambda d: d["graph_module"]["graph"].update(tensor_values=[]),
        lambda d: d["graph_module"].pop("signature"),
        lambda d: d["graph_module"]["signature"]["input_specs"].__setitem__(0, {"parameter": 5}),
        lambda d: d["graph_module"]["graph"]["nodes"][0].update(inputs=5),
        lambda d: d["graph_module"]["graph"]["nodes"][0]["inputs"].append({"arg": [1]}),
        lambda d: d["graph_module"]["module_call_graph"][0].update(signature="x"),
    ],
    ids=["sizes-int", "values-list", "no-signature", "param-int", "inputs-int", "arg-list", "signature-str"],
)
def test_a_malformed_program_is_a_422(service: Service, mutate: Callable[[dict[str, Any]], object]) -> None:
    upload = _upload()
    doc = json.loads(upload.programs["train"])
    mutate(doc)
    status, text = _post(service, upload, json.dumps(doc).encode())
    assert status == 422, text


def test_uploads_at_once_are_all_admitted(service: Service) -> None:
    """torch's deserializer keeps a module global; the API deserializes in threads, one at a time."""
    upload = _upload()

    def post(_: int) -> int:
        return service.client("alice").post("/v1/networks/exported", files=upload.files()).status_code

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(post, range(6))) == [201] * 6
