"""The deployment files, checked without a Docker engine: hadolint on the Dockerfile, Docker Compose's own
`config` on docker-compose.yml, and the promises the README and .env.example make about both."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from launcher.healthcheck import detect
from models.settings import Settings
from tests.conftest import ROOT
from tests.deploy import COMPOSE_FILE, ENV_EXAMPLE, compose, example_env, resolved_config, tool

DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return resolved_config(tmp_path_factory.mktemp("compose"), example_env())


def seconds(duration: str) -> float:
    """A Go duration as `docker compose config` writes it ("2m0s", "1m30s", "45s")."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}
    parts = re.findall(r"([\d.]+)(ms|h|m|s)", duration)
    assert parts, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(tool("hadolint")), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid_with_every_profile(tmp_path: Path) -> None:
    compose(tmp_path, example_env(), "config", "--quiet")


@pytest.mark.parametrize("variable", ["REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "GRADSERVE_API_KEYS"])
def test_compose_refuses_to_start_without_required_secrets(tmp_path: Path, variable: str) -> None:
    result = compose(tmp_path, example_env(**{variable: ""}), "config", "--quiet", check=False)
    assert result.returncode != 0
    assert variable in result.stderr and "set " in result.stderr, result.stderr


def test_redis_is_private_persistent_and_never_evicts(config: dict) -> None:
    redis = config["services"]["redis"]
    script = " ".join(redis["command"])
    for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction", "requirepass"):
        assert flag in script
    assert "ports" not in redis, "Redis must not be published on the host"
    assert [v["target"] for v in redis["volumes"]] == ["/data"]
    assert redis["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}
    assert redis["user"] != "root"


def test_api_and_workers_wire_up_as_documented(config: dict) -> None:
    services = config["services"]
    password = example_env()["REDIS_PASSWORD"]
    api = services["api"]
    assert [(p["target"], p["published"]) for p in api["ports"]] == [(8000, "8000")]
    assert api["healthcheck"]["test"][-4:] == ["launcher.healthcheck", "api", "--port", "8000"]
    assert api["command"][-2:] == ["--port", "8000"]
    for name in ("api", "worker", "worker-gpu", "worker-sessions", "worker-sessions-gpu"):
        service = services[name]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["environment"]["REDIS_URL"] == f"redis://:{password}@redis:6379/0"
    lanes = (("worker", "cpu"), ("worker-gpu", "gpu"), ("worker-sessions", "sessions-cpu"))
    for name, queue in (*lanes, ("worker-sessions-gpu", "sessions-gpu")):
        worker = services[name]
        assert worker["command"][:2] == ["gradserve", "worker"]
        assert worker["command"][worker["command"].index("--queues") + 1] == queue
        assert worker["restart"] in {"unless-stopped", "always"}
        # Longer than a session call may take, so a warm shutdown finishes the call in hand.
        assert seconds(worker["stop_grace_period"]) > Settings().call_timeout_s
    for name in ("worker-gpu", "worker-sessions-gpu"):
        gpu = services[name]
        assert gpu["profiles"] == ["gpu"]
        device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "profiles" not in services["worker-sessions"]
    assert services["flower"]["profiles"] == ["monitoring"]
    assert all(p.get("host_ip") == "127.0.0.1" for p in services["flower"]["ports"])


def test_minio_holds_the_artifacts_with_its_bucket_made_first(config: dict) -> None:
    services = config["services"]
    minio, bucket = services["minio"], services["minio-bucket"]
    assert "ports" not in minio and [v["target"] for v in minio["volumes"]] == ["/data"]
    assert bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in " ".join(bucket["entrypoint"])
    secret = example_env()["MINIO_ROOT_PASSWORD"]
    for name in ("api", "worker", "worker-gpu", "worker-sessions", "worker-sessions-gpu"):
        service = services[name]
        assert service["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
        env = service["environment"]
        assert env["GRADSERVE_ARTIFACTS_URL"] == "s3://gradserve/artifacts"
        assert env["GRADSERVE_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["GRADSERVE_S3_SECRET_ACCESS_KEY"] == secret == minio["environment"]["MINIO_ROOT_PASSWORD"]


def test_no_secret_is_baked_in() -> None:
    for path in (DOCKERFILE, COMPOSE_FILE, ENV_EXAMPLE):
        text = path.read_text()
        assert not re.search(
            r"(?im)^\s*(REDIS_PASSWORD|MINIO_ROOT_PASSWORD|GRADSERVE_API_KEYS)\s*[=:]\s*[^$\s#]", text
        ), path
        assert not re.search(r"redis://:[^$@]+@", text), path
    assert not re.search(r"(?im)^\s*(ENV|ARG)\s+\S*(PASSWORD|SECRET|API_KEYS|REDIS_URL)", DOCKERFILE.read_text())


def test_image_gets_every_package_and_the_context_lets_it() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = set(re.findall(r"(?m)^COPY\s+(?!--)(\S+)\s", DOCKERFILE.read_text()))
    for top in {p.split(".")[0] for p in packages}:
        assert top in copied, f"the Dockerfile does not COPY the {top}/ package"
    ignore = (ROOT / ".dockerignore").read_text().split()
    for source in (s.rstrip("/") for s in copied):
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f".dockerignore hides {source}"


def test_every_package_folder_is_installed() -> None:
    packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    tops = {p.split(".")[0] for p in packages}
    folders = {
        ".".join(init.parent.relative_to(ROOT).parts) for top in tops for init in (ROOT / top).rglob("__init__.py")
    }
    assert folders - packages == set(), "packages missing from pyproject.toml's [tool.setuptools] packages"


def test_lock_pins_every_runtime_dependency() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {re.sub(r"[-_.]+", "-", m.lower()) for m in re.findall(r"(?m)^([A-Za-z0-9_.-]+)==\S+$", lock)}
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", dep).group().lower())
        if name != "torch":
            assert name in pinned, f"{dep} is not pinned in requirements.lock (see its header to regenerate)"


def _env_name(field: str) -> str:
    return "REDIS_URL" if field == "redis_url" else f"GRADSERVE_{field.upper()}"


def _default_cell(default: object) -> str:
    if default is None:
        return "unset"
    return "empty" if default == "" else str(default)


def test_readme_documents_every_setting_with_its_default() -> None:
    rows = dict(re.findall(r"(?m)^\|\s*`([A-Z0-9_]+)`\s*\|\s*`?([^`|]*?)`?\s*\|", README.read_text()))
    missing = []
    for field, info in Settings.model_fields.items():
        default = info.default if info.default is not PydanticUndefined else info.default_factory()
        expected = _default_cell(default)
        if rows.get(_env_name(field)) != expected:
            missing.append(f"| `{_env_name(field)}` | `{expected}` | {info.description or '...'} |")
    assert not missing, "README's configuration table lacks or misstates these rows:\n" + "\n".join(missing)


def test_every_compose_variable_is_documented() -> None:
    variables = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    example, readme = ENV_EXAMPLE.read_text(), README.read_text()
    for name in variables:
        assert re.search(rf"(?m)^#?\s*{name}=", example), f"{name} is not in .env.example"
        assert f"`{name}`" in readme, f"{name} is not in README's configuration table"


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["/sbin/docker-init", "--", "gradserve", "worker", "--queues", "cpu"], ("worker", 8000)),
        (["gradserve", "api", "--host", "0.0.0.0", "--port", "9000"], ("api", 9000)),
        ([], ("api", 8000)),
    ],
)
def test_healthcheck_reads_its_role_from_the_container_command(cmdline: list[str], expected: tuple) -> None:
    assert detect(cmdline) == expected
