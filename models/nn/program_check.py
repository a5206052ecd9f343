"""What a client's exported program may contain, checked on its JSON before torch reads any of it.

torch's export deserializer trusts its input: it resolves every node target with ``getattr`` chains
from ``torch`` (so ``torch.load`` would be a callable node), hands every symbolic-shape string to
``sympy.sympify`` (an ``eval``), and keeps ``guards_code`` strings that become generated Python. So
the graph is checked here first, as plain JSON:

- node targets: ATen ops (less the few that read files or uninitialised memory), the higher-order
  ops export emits for ``no_grad`` and autocast regions, and symbolic-shape arithmetic;
- symbolic expressions: a small grammar of symbol names, numbers, operators and sympy's own functions;
- no custom objects, no tokens, no guard code, no pytree types beyond tuple, list and dict;
- node metadata cut to the module path each node came from (stack traces name the client's files).

The checks return the cleaned JSON, which is what the deserializer then sees.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from models.errors import InvalidInput, Loc, PayloadTooLarge

# ATen ops that would read a file or hand out uninitialised memory (another tenant's old tensors).
DENIED_ATEN = frozenset(
    {
        "from_file",
        "empty",
        "empty_like",
        "empty_strided",
        "empty_permuted",
        "new_empty",
        "new_empty_strided",
        "resize_",
        "resize_as_",
        "set_",
        "as_strided_",
        "_make_per_tensor_quantized_tensor",
    }
)
HIGHER_ORDER = frozenset({"wrap_with_set_grad_enabled", "wrap_with_autocast"})
# A node's arguments: values, tensors and subgraphs. Never an operator (the deserializer resolves its name by
# getattr from ``torch``, and a higher-order op calls what it is given: a way around the target allowlist),
# a custom object, or a string-keyed nest that could hide either.
ARGUMENT_KINDS = frozenset(
    {
        "as_none",
        "as_tensor",
        "as_tensors",
        "as_int",
        "as_ints",
        "as_float",
        "as_floats",
        "as_string",
        "as_strings",
        "as_sym_int",
        "as_sym_ints",
        "as_scalar_type",
        "as_memory_format",
        "as_layout",
        "as_device",
        "as_bool",
        "as_bools",
        "as_sym_bool",
        "as_sym_bools",
        "as_graph",
        "as_optional_tensors",
        "as_sym_float",
        "as_sym_floats",
        "as_optional_tensor",
        "as_complex",
        "as_nested_tensors",
        "as_int_lists",
        "as_float_lists",
    }
)
# Symbolic-shape arithmetic on sizes (``x.size(0) // 2``): operator-module functions only.
SYM_OPS = frozenset(
    f"_operator.{name}"
    for name in (
        [
            "getitem",
            "add",
            "sub",
            "mul",
            "floordiv",
            "truediv",
            "mod",
            "neg",
            "pow",
            "eq",
            "ne",
            "lt",
            "le",
            "gt",
            "ge",
            "and_",
            "or_",
            "not_",
            "abs",
        ]
    )
) | frozenset({"math.ceil", "math.floor", "math.sqrt", "torch.sym_max", "torch.sym_min", "torch.sym_not"})
# What a symbolic expression may name: sympy's functions as torch's shape environment writes them.
SYMPY_NAMES = frozenset(
    [
        "Symbol",
        "Integer",
        "Rational",
        "True",
        "False",
        "positive",
        "integer",
        "nonnegative",
        "real",
        "finite",
        "FloorDiv",
        "CeilDiv",
        "Mod",
        "PythonMod",
        "Max",
        "Min",
        "Abs",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "CeilToInt",
        "FloorToInt",
        "TruncToInt",
        "RoundToInt",
        "IntTrueDiv",
        "FloatTrueDiv",
        "ToFloat",
        "OpaqueUnaryFn_sqrt",
        # sympy's own classes, as srepr writes an expression
        "Add",
        "Mul",
        "floor",
        "ceiling",
        "oo",
        "int_oo",
        "IntInfinity",
        "NegativeIntInfinity",
        "Infinity",
        "NegativeInfinity",
        "Identity",
    ]
)
# Bounded: sympify evaluates these, and torch counts up to a symbol's index (``u999999999`` took a minute),
# and ``9**9**9`` or ``Float(1, 999999999)`` would spin a core for good. So: no powers, short numbers.
_SYMBOL = re.compile(r"[a-z]{1,3}\d{1,5}")
_TOKEN = re.compile(
    r"\s+|(?P<num>\d{1,12}(?:\.\d{1,12})?(?![\d.]))|'(?P<quoted>[a-z]{1,3}\d{1,5})'|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|//|==|!=|<=|>=|[-+*/%(),=<>&|~]"
)
# A symbol to a small power: the only power sympify may see (a power of literals, 9**9**9, never ends).
_SMALL_POWER = re.compile(r"(?:Pow|PowByNatural)\(Symbol\('[a-z]{1,3}\d{1,5}'(?:, [a-z]+=True)*\), Integer\([1-4]\)\)")
MAX_EXPR_CHARS = 2000
TREESPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict"})
INPUT_KINDS = frozenset({"parameter", "buffer", "tensor_constant", "user_input"})
OUTPUT_KINDS = frozenset({"user_output", "buffer_mutation"})
KEEP_METADATA = ("nn_module_stack",)


@dataclass(frozen=True)
class ProgramFacts:
    """What the checked program declares: its state by kind, its user inputs and how many nodes it has."""

    doc: dict[str, Any]  # the cleaned program, to serialize again for the deserializer
    parameters: tuple[str, ...]
    buffers: tuple[str, ...]
    constants: tuple[str, ...]
    transient: frozenset[str]  # non-persistent buffers: torch's deserializer takes them as constants
    user_inputs: tuple[str, ...]  # graph names of the user inputs, in order
    nodes: int
    ops: frozenset[str]


def check_program(raw: bytes, *, max_bytes: int, max_nodes: int, loc: Loc) -> ProgramFacts:
    """Parse and check one serialized exported program; raise a 4xx naming the node or field at fault."""
    try:
        return _check_program(raw, max_bytes=max_bytes, max_nodes=max_nodes, loc=loc)
    except MALFORMED as exc:
        raise malformed(exc, loc) from exc


# What reading a JSON document of the wrong shape raises: a 422 that says so, never a 500.
MALFORMED = (KeyError, TypeError, AttributeError, IndexError, ValueError, StopIteration)


def malformed(exc: BaseException, loc: Loc) -> InvalidInput:
    return InvalidInput(f"the exported program is malformed ({type(exc).__name__}: {exc})", loc)


def _check_program(raw: bytes, *, max_bytes: int, max_nodes: int, loc: Loc) -> ProgramFacts:
    if len(raw) > max_bytes:
        raise PayloadTooLarge(
            f"the exported program is {len(raw):,} bytes; the limit is {max_bytes:,} (GRADSERVE_MAX_PROGRAM_BYTES)"
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"the exported program is not JSON ({exc}); send the `exported_program` bytes that "
            "torch._export.serde.serialize.serialize(ep) gives, never a .pt2 archive",
            loc,
        ) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("graph_module"), dict):
        raise InvalidInput("the exported program has no graph_module: is this torch's export serialization?", loc)
    gm = doc["graph_module"]
    if doc.get("guards_code"):
        raise InvalidInput("the exported program carries guards_code; guards travel as range_constraints only", loc)
    nodes = list(_nodes(gm.get("graph"), (*loc, "graph_module", "graph")))
    if len(nodes) > max_nodes:
        raise PayloadTooLarge(
            f"the exported graph has {len(nodes):,} nodes; the limit is {max_nodes:,} (GRADSERVE_MAX_GRAPH_NODES)"
        )
    ops = set()
    for node, where in nodes:
        target = node.get("target")
        if not isinstance(target, str) or not allowed_target(target):
            name = node.get("name") or where
            raise InvalidInput(
                f"node '{name}' calls {target!r}, which is not allowed: an exported program may call ATen ops "
                "(torch.ops.aten.*, less those that read files or uninitialised memory), no_grad/autocast "
                "regions and shape arithmetic; custom operators cannot run here",
                where,
                node=name,
                op=str(target),
            )
        ops.add(target)
        _check_arguments(node, target, where)
        meta = node.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        node["metadata"] = {k: meta[k] for k in KEEP_METADATA if isinstance(meta.get(k), str)}
    for expr, where in _exprs(doc, loc):
        check_sym_expr(expr, where)
    graph = gm["graph"]
    if graph.get("custom_obj_values"):
        raise InvalidInput("the exported program holds custom (TorchBind) objects, which cannot run here", loc)
    sig = gm.get("signature") or {}
    specs = sig.get("input_specs") or []
    params, buffers, constants, users = _inputs(specs, (*loc, "signature", "input_specs"))
    transient = frozenset(
        s["buffer"]["buffer_name"] for s in specs if "buffer" in s and s["buffer"].get("persistent") is False
    )
    for i, spec in enumerate(sig.get("output_specs") or []):
        kind = next(iter(spec), None) if isinstance(spec, dict) else None
        if kind not in OUTPUT_KINDS:
            raise InvalidInput(
                f"output {i} is a {kind!r} output; a trainable program returns user outputs and buffer updates only",
                (*loc, "signature", "output_specs", i),
            )
    _check_treespecs(gm, loc)
    return ProgramFacts(doc, params, buffers, constants, transient, users, len(nodes), frozenset(ops))


def _check_arguments(node: dict[str, Any], target: str, loc: Loc) -> None:
    name = node.get("name") or "?"
    args = [(i.get("arg") if isinstance(i, dict) else i, (*loc, "inputs", j)) for j, i in enumerate(node["inputs"])]
    args += [(o, (*loc, "outputs", j)) for j, o in enumerate(node.get("outputs") or [])]
    for arg, where in args:
        kind = next(iter(arg), None) if isinstance(arg, dict) and len(arg) == 1 else None
        if kind not in ARGUMENT_KINDS:
            raise InvalidInput(
                f"node '{name}' ({target}) takes an argument of kind {kind!r}; arguments are values, tensors and "
                "subgraphs, never operators or objects",
                where,
                node=str(name),
                op=target,
            )
    if target.startswith("torch.ops.higher_order.") and not any(
        isinstance(a, dict) and "as_graph" in a for a, _ in args
    ):
        raise InvalidInput(f"node '{name}' ({target}) wraps no subgraph", loc, node=str(name), op=target)


def allowed_target(target: str) -> bool:
    if target in SYM_OPS:
        return True
    parts = target.split(".")
    if len(parts) == 5 and parts[:3] == ["torch", "ops", "aten"]:
        return parts[3] not in DENIED_ATEN and all(p.isidentifier() for p in parts[3:])
    return len(parts) == 4 and parts[:3] == ["torch", "ops", "higher_order"] and parts[3] in HIGHER_ORDER


def check_sym_expr(expr: Any, loc: Loc) -> None:
    """Refuse anything but arithmetic over symbols and sympy's functions: sympify evaluates this string."""
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
        raise InvalidInput("a symbolic shape expression is not a string of at most 2000 characters", loc)
    if "**" in expr:
        raise InvalidInput(f"symbolic shape expression {expr[:80]!r} is not allowed at '**'", loc)
    expr = _SMALL_POWER.sub("s0", expr)  # a symbol squared (attention strides); no other power is allowed
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        name = match.group("name") if match else None
        if match is None or (name is not None and name not in SYMPY_NAMES and not _SYMBOL.fullmatch(name)):
            bad = expr[pos : pos + 20] if match is None else name
            raise InvalidInput(f"symbolic shape expression {expr[:80]!r} is not allowed at {bad!r}", loc)
        pos = match.end()


def _nodes(graph: Any, loc: Loc) -> Iterator[tuple[dict[str, Any], Loc]]:
    """Every node of a graph and of the subgraphs its higher-order ops carry."""
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise InvalidInput("the exported program's graph has no node list", loc)
    for i, node in enumerate(graph["nodes"]):
        if not isinstance(node, dict) or not isinstance(node.get("inputs"), list):
            raise InvalidInput("a graph node is not an object with a list of inputs", (*loc, "nodes", i))
        yield node, (*loc, "nodes", i)
        for j, arg in enumerate(node.get("inputs") or []):
            value = arg.get("arg") if isinstance(arg, dict) else None
            sub = value.get("as_graph") if isinstance(value, dict) else None
            if sub is not None:
                if not isinstance(sub, dict):
                    raise InvalidInput("a subgraph argument is not an object", (*loc, "nodes", i, "inputs", j))
                yield from _nodes(sub.get("graph"), (*loc, "nodes", i, "inputs", j))


def _exprs(value: Any, loc: Loc) -> Iterator[tuple[Any, Loc]]:
    """Every string torch will parse as a symbolic expression: ``expr_str`` fields, range constraint keys."""
    stack: list[tuple[Any, Loc]] = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if key == "expr_str":
                    yield sub, (*where, key)
                elif key == "range_constraints" and isinstance(sub, dict):
                    yield from ((k, (*where, key)) for k in sub)
                    stack.append((sub, (*where, key)))
                else:
                    stack.append((sub, (*where, key)))
        elif isinstance(item, list):
            stack.extend((sub, (*where, i)) for i, sub in enumerate(item))


def _inputs(specs: list[Any], loc: Loc) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    params: list[str] = []
    buffers: list[str] = []
    constants: list[str] = []
    users: list[str] = []
    for i, spec in enumerate(specs):
        kind = next(iter(spec), None) if isinstance(spec, dict) else None
        if kind not in INPUT_KINDS:
            raise InvalidInput(
                f"input {i} is a {kind!r} input; an exported program here takes parameters, buffers, tensor "
                "constants and user inputs only",
                (*loc, i),
            )
        body = spec[kind]
        if kind == "user_input":
            arg = body.get("arg") or {}
            users.append(str((arg.get("as_tensor") or {}).get("name", f"input_{i}")))
        else:
            name = body.get({"parameter": "parameter_name", "buffer": "buffer_name"}.get(kind, "tensor_constant_name"))
            if not isinstance(name, str) or not name:
                raise InvalidInput(f"input {i} ({kind}) has no name", (*loc, i))
            {"parameter": params, "buffer": buffers, "tensor_constant": constants}[kind].append(name)
    return tuple(params), tuple(buffers), tuple(constants), tuple(users)


def _check_treespecs(gm: dict[str, Any], loc: Loc) -> None:
    """Inputs and outputs as tuples, lists and dicts: a pytree type of the client's (a ``ModelOutput``) is
    flattened by the client, since naming it here would import the client's class."""
    if gm.get("treespec_namedtuple_fields"):
        raise InvalidInput("the program's inputs or outputs are namedtuples; flatten them to tuples", loc)
    for i, entry in enumerate(gm.get("module_call_graph") or []):
        sig = entry.get("signature") if isinstance(entry, dict) else None
        if not sig:
            continue
        for field in ("in_spec", "out_spec"):
            for kind in _treespec_types(sig.get(field)):
                if kind not in TREESPEC_TYPES:
                    raise InvalidInput(
                        f"the program's {field} holds a {kind}; inputs and outputs must be tensors in tuples, "
                        "lists and dicts (gradserve's client flattens model outputs before it sends them)",
                        (*loc, "graph_module", "module_call_graph", i, field),
                    )


def _treespec_types(text: Any) -> Iterator[Any]:
    try:
        spec = orjson.loads(text) if isinstance(text, str) else None
    except orjson.JSONDecodeError:
        spec = None
    if not isinstance(spec, list) or len(spec) != 2:
        yield "an unreadable tree spec"
        return
    stack = [spec[1]]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            yield "an unreadable tree spec"
            return
        yield node.get("type")
        stack.extend(node.get("children_spec") or [])
