"""A module, function or class named in the packages' docs (````models.nn.build.validate_network````) exists:
a rename or a move that leaves a docstring pointing nowhere fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "models", "worker", "launcher", "gradserve")
REFERENCE = re.compile(r"``((?:api|models|worker|launcher|gradserve)(?:\.[A-Za-z_]\w*)+)")


def _module_path(name: str) -> Path | None:
    base = ROOT / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _defines(path: Path, name: str) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def _resolves(reference: str) -> bool:
    parts = reference.split(".")
    for cut in range(len(parts), 0, -1):
        path = _module_path(".".join(parts[:cut]))
        if path is not None:
            return cut == len(parts) or _defines(path, parts[cut])
    return False


def test_every_named_module_and_definition_exists() -> None:
    seen, missing = 0, []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for reference in REFERENCE.findall(line):
                    seen += 1
                    if not _resolves(reference):
                        missing.append(f"{path.relative_to(ROOT)}:{number}: {reference}")
    assert seen > 10  # the references were found at all
    assert missing == []
