"""The autograd graph of a tensor as plain data (``trace``), and its Graphviz renderings (``to_dot``, ``to_svg``).

``trace`` walks ``grad_fn.next_functions`` breadth-first from the root, so a node cap keeps the
part nearest the loss. Nodes carry PyTorch's own class names (``MseLossBackward0``,
``AddmmBackward0``, ``AccumulateGrad``); an ``AccumulateGrad`` node names the parameter it feeds
and its shape. Edges go from a node to each of its ``next_functions`` in that order (``index`` is
the position in ``next_functions``, so ``None`` slots for inputs that need no gradient leave a gap).

    {"root": "n0", "truncated": false, "max_nodes": 500,
     "nodes": [{"id": "n0", "name": "MseLossBackward0", "saved": {"self": {"shape": [1, 10], ...}, ...}},
               {"id": "n5", "name": "AccumulateGrad", "param": {"name": "fc3.bias", "shape": [10]}}, ...],
     "edges": [{"source": "n0", "target": "n1", "index": 0, "input_nr": 0}, ...]}
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections import deque
from collections.abc import Mapping
from typing import Any

import torch

from models.errors import InvalidInput, ServiceUnavailable

DEFAULT_MAX_NODES = 500
# Saved values that are long lists (sizes of big tensors) are cut to this many items.
_MAX_SAVED_ITEMS = 16
SVG_TIMEOUT_S = 20


def trace(
    root: torch.Tensor, param_names: Mapping[Any, Any] | None = None, max_nodes: int = DEFAULT_MAX_NODES
) -> dict[str, Any]:
    """The graph that ``root.backward()`` would walk, as JSON-ready nodes and edges.

    ``param_names`` labels parameters; it may map tensors (or their ``id``) to names, or names to
    tensors, as ``dict(net.named_parameters())`` does.
    """
    if max_nodes < 1:
        raise InvalidInput("max_nodes must be at least 1", ("query", "max_nodes"))
    names = _names_by_id(param_names or {})
    graph: dict[str, Any] = {"root": None, "nodes": [], "edges": [], "truncated": False, "max_nodes": max_nodes}
    start = root.grad_fn
    if start is None:
        if root.requires_grad:  # a leaf: its graph is the AccumulateGrad that backward would call
            graph["nodes"].append({"id": "n0", "name": "AccumulateGrad", "param": _leaf_label(root, names)})
            graph["root"] = "n0"
        return graph
    ids: dict[int, str] = {id(start): "n0"}
    graph["root"] = "n0"
    queue: deque[Any] = deque([start])
    while queue:
        fn = queue.popleft()
        graph["nodes"].append(_node(fn, ids[id(fn)], names))
        for index, (child, input_nr) in enumerate(fn.next_functions):
            if child is None:
                continue
            if id(child) not in ids:
                if len(ids) >= max_nodes:
                    graph["truncated"] = True
                    continue
                ids[id(child)] = f"n{len(ids)}"
                queue.append(child)
            graph["edges"].append(
                {"source": ids[id(fn)], "target": ids[id(child)], "index": index, "input_nr": input_nr}
            )
    return graph


def _names_by_id(mapping: Mapping[Any, Any]) -> dict[int, str]:
    out: dict[int, str] = {}
    for key, value in mapping.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            out[id(value)] = key
        elif isinstance(key, torch.Tensor):
            out[id(key)] = str(value)
        else:
            out[int(key)] = str(value)
    return out


def _node(fn: Any, node_id: str, names: dict[int, str]) -> dict[str, Any]:
    node: dict[str, Any] = {"id": node_id, "name": type(fn).__name__}
    variable = getattr(fn, "variable", None)
    if isinstance(variable, torch.Tensor):
        node["param"] = _leaf_label(variable, names)
        return node
    saved = _saved(fn)
    if saved:
        node["saved"] = saved
    return node


def _leaf_label(tensor: torch.Tensor, names: dict[int, str]) -> dict[str, Any]:
    return {"name": names.get(id(tensor)), "shape": list(tensor.shape)}


def _saved(fn: Any) -> dict[str, Any]:
    """What the node saved for backward: tensors by shape and dtype, small values as they are."""
    out: dict[str, Any] = {}
    for attr in dir(fn):
        if not attr.startswith("_saved_"):
            continue
        try:
            value = getattr(fn, attr)
        except RuntimeError:  # freed by a backward without retain_graph
            out[attr[len("_saved_") :]] = {"freed": True}
            continue
        described = _describe(value)
        if described is not _SKIP:
            out[attr[len("_saved_") :]] = described
    return out


_SKIP = object()


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, int) and not isinstance(value, bool) and value >= 2**63:
        # PyTorch hands saved int64 fields out as unsigned: ignore_index=-100 reads 18446744073709551516.
        return value - 2**64
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (tuple, list)):
        items = [_describe(v) for v in value[:_MAX_SAVED_ITEMS]]
        if any(item is _SKIP for item in items):
            return _SKIP
        return items + (["..."] if len(value) > _MAX_SAVED_ITEMS else [])
    if isinstance(value, (torch.dtype, torch.device, torch.layout)):
        return str(value)
    return _SKIP  # opaque objects (SymInt wrappers, scalars of odd types) say nothing useful


def mark_freed(graph: dict[str, Any]) -> dict[str, Any]:
    """The same graph with every saved tensor shown as freed, as after a backward without retain_graph."""
    for node in graph["nodes"]:
        saved = node.get("saved")
        if saved:
            node["saved"] = {
                k: ({"freed": True} if isinstance(v, dict) and "shape" in v else v) for k, v in saved.items()
            }
    return graph


# --- renderers ---------------------------------------------------------------------------------------------------


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(node: dict[str, Any]) -> str:
    lines = [node["name"]]
    param = node.get("param")
    if param is not None:
        lines.append(f"{param['name'] or 'tensor'} {param['shape']}")
    for key, value in (node.get("saved") or {}).items():
        if isinstance(value, dict) and "shape" in value:
            lines.append(f"{key}: {value['shape']}")
        elif isinstance(value, dict) and value.get("freed"):
            lines.append(f"{key}: (freed)")
    return "\n".join(lines)


def to_dot(graph: dict[str, Any], title: str = "autograd") -> str:
    """Graphviz source: arrows point from a node to its ``next_functions``, the way backward walks."""
    out = [
        f"digraph {_dot_str(title)} {{",
        '  graph [rankdir=TB, fontname="Helvetica"];',
        '  node [shape=box, style="rounded,filled", fillcolor="#f2f2f2", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8];',
    ]
    for node in graph["nodes"]:
        color = "#cfe2ff" if node.get("param") else ("#ffd6a5" if node["id"] == graph.get("root") else "#f2f2f2")
        out.append(f"  {node['id']} [label={_dot_str(_label(node))}, fillcolor={_dot_str(color)}];")
    for edge in graph["edges"]:
        out.append(f"  {edge['source']} -> {edge['target']};")
    if graph.get("truncated"):
        note = f"truncated at {graph.get('max_nodes')} nodes"
        out.append(f'  truncated [label={_dot_str(note)}, shape=note, fillcolor="#fff3b0"];')
    out.append("}")
    return "\n".join(out) + "\n"


def graphviz_available() -> bool:
    return shutil.which("dot") is not None


def to_svg(dot_source: str) -> str:
    """Render with Graphviz's ``dot``; a missing or failing binary is a clear 503, never a crash."""
    binary = shutil.which("dot")
    if binary is None:
        raise ServiceUnavailable(
            "SVG needs Graphviz's `dot` program, which is not installed on the worker "
            "(install it with `apt-get install graphviz`); ask for format=dot to get the Graphviz source instead"
        )
    try:
        done = subprocess.run(
            [binary, "-Tsvg"], input=dot_source.encode(), capture_output=True, timeout=SVG_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceUnavailable(f"Graphviz's `dot` failed to run: {exc}; ask for format=dot instead") from exc
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[:500]
        raise ServiceUnavailable(f"Graphviz's `dot` exited with {done.returncode}: {err}")
    return done.stdout.decode()
