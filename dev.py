#!/usr/bin/env python3
"""Set everything up on a fresh machine (Python 3.11+ and pip) and run gradserve or its tests.

    python3 dev.py up [gradserve up options]   # creates .venv when missing, installs, starts the service
    python3 dev.py test [pytest options]       # the same set-up, the static checks, then the whole test suite

The static checks (ruff lint, ruff format, mypy) run before the whole suite; naming test files or
``-k``/``-m`` selections (``python3 dev.py test tests/unit``) runs just those tests, without them.

Only the standard library is used here, since nothing else is installed yet.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".gradserve-installed"
# A pinned CPU-friendly torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC = os.environ.get("GRADSERVE_TORCH_SPEC", "torch==2.13.0")


def _pip(*args: str) -> None:
    subprocess.run(
        [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args], check=True
    )


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs on whatever python3 the user has
        sys.exit(f"gradserve needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", flush=True)
        venv.create(VENV, with_pip=True)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + TORCH_SPEC.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("dev.py: installing gradserve and its dependencies into .venv", flush=True)
    has_torch = subprocess.run([str(BIN / "python"), "-c", "import torch"], capture_output=True).returncode == 0
    if not has_torch:
        _pip(TORCH_SPEC)
    _pip("-e", f"{ROOT}[test]")
    STAMP.write_text(wanted)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"up", "test"}:
        print(__doc__)
        return 2
    ensure_venv()
    os.chdir(ROOT)
    if argv[0] == "up":
        cmd = [str(BIN / "gradserve"), "up", *argv[1:]]
    else:
        if not _selects_tests(argv[1:]):
            static_checks()
        cmd = [str(BIN / "python"), "-m", "pytest", *argv[1:]]
    os.execv(cmd[0], cmd)


def _selects_tests(args: list[str]) -> bool:
    return any(a in {"-k", "-m"} or a.startswith(("-k", "-m", "tests")) for a in args)


def static_checks() -> None:
    """Lint, formatting and types, each a failure of the test command when it fails."""
    for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]):
        print(f"dev.py: {' '.join(check)}", flush=True)
        if subprocess.run([str(BIN / check[0]), *check[1:]], cwd=ROOT).returncode != 0:
            sys.exit(f"dev.py: `{' '.join(check)}` failed")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
