"""A trained network as a file that runs without gradserve: TorchScript (``torch.jit.trace``), ONNX
(``torch.onnx.export``) or ``torch.export``'s ``.pt2``. The batch dimension stays free where the format allows.
"""

from __future__ import annotations

import inspect
import io
import os
import tempfile
import threading
from typing import Any, Literal

import torch

from models.nn.build import build_network
from models.spec.network import NetworkSpec
from models.wire.tensors import DTYPES

ExportFormat = Literal["torchscript", "onnx", "pt2"]
# torch.export and jit.trace keep process-global state (the dispatch mode stack, the tracing state): two
# threads exporting at once failed ("Trying to pop empty mode stack", TracingCheckError).
_EXPORTING = threading.Lock()
SUFFIX: dict[str, str] = {"torchscript": ".pt", "onnx": ".onnx", "pt2": ".pt2"}


def export_network(spec: NetworkSpec, weights: dict[str, torch.Tensor], fmt: ExportFormat) -> bytes:
    """The file of ``fmt`` for the network with these weights, in eval mode, on the CPU."""
    net = build_network(spec)
    net.load_state_dict(weights)
    example = torch.zeros((2, *spec.input_shape), dtype=DTYPES[spec.input_dtype])  # (B, *input_shape)
    return export_module(net, example, fmt)


def export_module(net: torch.nn.Module, example: torch.Tensor, fmt: ExportFormat) -> bytes:
    """``net`` (a catalogue network or an exported one, weights loaded) as a file of ``fmt``."""
    net.eval()
    batch: tuple[Any, ...] = ({0: torch.export.Dim.AUTO},)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in inspect.signature(net.forward).parameters.values()):
        batch = (batch,)  # forward(*args) (an exported network): the shapes of the one tuple it takes
    buf = io.BytesIO()
    with _EXPORTING, torch.no_grad():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(net, (example,)), buf)  # type: ignore[no-untyped-call]
        elif fmt == "pt2":
            torch.export.save(torch.export.export(net, (example,), dynamic_shapes=batch), buf)
        else:
            return _onnx(net, example, batch)
    return buf.getvalue()


def _onnx(net: torch.nn.Module, example: torch.Tensor, batch: tuple[Any, ...]) -> bytes:
    # The exporter writes external data next to a path; one self-contained file is what users want.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            dynamic_shapes=batch,
            input_names=["input"],
            output_names=["output"],
            verbose=False,
        )
        assert program is not None
        program.save(path, external_data=False)
        with open(path, "rb") as f:
            return f.read()
