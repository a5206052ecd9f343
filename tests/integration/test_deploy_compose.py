"""docker-compose.yml run without Docker: its `redis`, `api`, `worker` and `sweeper` services' own commands,
environment and healthchecks, as `docker compose config` resolves them, become local processes, and a
tutorial session and a training job go through them over HTTP. If the file drifts from the code (a
renamed flag, a setting the code no longer reads, a broken healthcheck), this fails.

Only what a container gives for free is swapped: `redis` and port 6379 become a free loopback port
(a tiny `redis-server` wrapper appends it), `--host 0.0.0.0 --port 8000` becomes 127.0.0.1 and a free
port, and the image's PATH is the test's virtualenv.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
import httpx
import pytest
import redis

from launcher.embedded_redis import free_port, redis_server_binary
from tests.conftest import S3Server
from tests.deploy import example_env, resolved_config
from tests.lenet import LENET_SPEC

VENV_BIN = Path(sys.executable).parent
# A setting set only in .env, to prove env_file carries GRADSERVE_* into the containers.
PROBE_SETTING = ("GRADSERVE_CALL_TIMEOUT_S", "45")


@dataclass
class Deployed:
    url: str
    api_key: str
    services: dict
    envs: dict[str, dict[str, str]]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.api_key}"}, timeout=120)

    def log_tail(self) -> str:
        return "\n".join(f"--- {name}:\n{path.read_text()[-3000:]}" for name, path in self.logs.items())

    def healthcheck(self, name: str, port_map: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The service's own healthcheck test, run as Docker would run it inside the container."""
        test = self.services[name]["healthcheck"]["test"]
        argv = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])
        argv = [(port_map or {}).get(arg, arg) for arg in argv]
        return subprocess.run(argv, env=self.envs[name], capture_output=True, text=True, timeout=30)


def _container_env(service: dict, extra: dict[str, str], home: Path) -> dict[str, str]:
    """What the image provides (its PATH and ENV lines) plus the service's resolved environment."""
    base = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(home), "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"}
    return {**base, **{k: str(v) for k, v in (service.get("environment") or {}).items()}, **extra}


def _local_redis_url(url: str, password: str, port: int) -> str:
    parts = urlsplit(url)
    assert (parts.hostname, parts.port, parts.password) == ("redis", 6379, password), f"REDIS_URL is {url!r}"
    return urlunsplit(parts._replace(netloc=f":{password}@127.0.0.1:{port}"))


def _start(deployed: Deployed, name: str, argv: list[str], cwd: Path) -> None:
    log = cwd / f"{name}.log"
    executable = shutil.which(argv[0], path=deployed.envs[name]["PATH"])
    assert executable, f"{name}: {argv[0]!r} is not on the image's PATH"
    deployed.logs[name] = log
    deployed.procs[name] = subprocess.Popen(
        [executable, *argv[1:]],
        cwd=cwd,
        env=deployed.envs[name],
        stdin=subprocess.DEVNULL,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_healthy(deployed: Deployed, name: str, timeout_s: float, port_map: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = deployed.healthcheck(name, port_map)
        if result.returncode == 0:
            return
        exited = {n: p.returncode for n, p in deployed.procs.items() if p.poll() is not None}
        if exited or time.monotonic() > deadline:
            pytest.fail(f"{name} unhealthy ({exited or 'timed out'}): {result.stderr}\n{deployed.log_tail()}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen, timeout_s: float) -> float:
    """SIGTERM as `docker stop` sends it; the seconds it took to exit."""
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return time.monotonic() - started


def _fake_redis_binaries(bin_dir: Path, port: int, data_dir: Path) -> None:
    """`redis-server` and `redis-cli` as the redis image has them, pointed at a free loopback port."""
    bin_dir.mkdir(parents=True)
    data_dir.mkdir(parents=True)
    real = redis_server_binary()
    wrappers = {
        # The image's WORKDIR is /data; here the data goes to a temporary folder instead.
        "redis-server": f'exec "{real}" "$@" --port {port} --bind 127.0.0.1 --dir "{data_dir}"\n',
        "redis-cli": f'exec "{real.parent / "redis-cli"}" -p {port} "$@"\n',
    }
    for name, body in wrappers.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}")
        path.chmod(0o755)


def _local_minio(service: dict, server: S3Server) -> dict[str, str]:
    """The compose services' MinIO as moto's S3 server, with the bucket `minio-bucket` would have made."""
    env = service["environment"]
    assert env["GRADSERVE_S3_ENDPOINT_URL"] == "http://minio:9000", env
    bucket = urlsplit(env["GRADSERVE_ARTIFACTS_URL"]).netloc
    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=env["GRADSERVE_S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["GRADSERVE_S3_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    return {"GRADSERVE_S3_ENDPOINT_URL": server.endpoint}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("deploy")
    values = example_env(**dict([PROBE_SETTING]))
    services = resolved_config(tmp / "project", values)["services"]
    home = tmp / "home"
    home.mkdir()

    redis_port, api_port = free_port(), free_port()
    redis_url = _local_redis_url(services["api"]["environment"]["REDIS_URL"], values["REDIS_PASSWORD"], redis_port)
    for name in ("worker", "worker-sessions", "sweeper", "api"):
        assert services[name]["environment"]["REDIS_URL"] == services["api"]["environment"]["REDIS_URL"]
    _fake_redis_binaries(tmp / "redis-bin", redis_port, tmp / "redis-data")
    minio = _local_minio(services["api"], s3_server)
    envs = {
        "redis": {
            "PATH": f"{tmp / 'redis-bin'}:/usr/bin:/bin",
            "HOME": str(home),
            **{k: str(v) for k, v in services["redis"]["environment"].items()},
        },
        "api": _container_env(services["api"], {"REDIS_URL": redis_url, **minio}, home),
        "worker": _container_env(services["worker"], {"REDIS_URL": redis_url, **minio}, home),
        "worker-sessions": _container_env(services["worker-sessions"], {"REDIS_URL": redis_url, **minio}, home),
        "sweeper": _container_env(services["sweeper"], {"REDIS_URL": redis_url, **minio}, home),
    }
    deployed = Deployed(
        url=f"http://127.0.0.1:{api_port}",
        api_key=values["GRADSERVE_API_KEYS"].split(":")[0],
        services=services,
        envs=envs,
    )
    api_argv = list(services["api"]["command"])
    assert api_argv[-4:] == ["--host", "0.0.0.0", "--port", "8000"], api_argv
    api_argv[-4:] = ["--host", "127.0.0.1", "--port", str(api_port)]
    try:
        _start(deployed, "redis", services["redis"]["command"], tmp)
        _wait_healthy(deployed, "redis", 30)
        _start(deployed, "worker", services["worker"]["command"], tmp)
        _start(deployed, "worker-sessions", services["worker-sessions"]["command"], tmp)
        _start(deployed, "sweeper", services["sweeper"]["command"], tmp)
        _start(deployed, "api", api_argv, tmp)
        _wait_healthy(deployed, "api", 180, port_map={"8000": str(api_port)})
        _wait_healthy(deployed, "worker", 30)
        _wait_healthy(deployed, "worker-sessions", 30)
        yield deployed
    finally:
        for proc in reversed(deployed.procs.values()):
            _stop(proc, 30)


def test_redis_runs_with_the_compose_settings_and_demands_the_password(deployed: Deployed) -> None:
    url = deployed.envs["api"]["REDIS_URL"]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=urlsplit(url).port).ping()
    client = redis.Redis.from_url(url)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    client.close()


def test_env_file_settings_reach_the_api_and_the_workers(deployed: Deployed) -> None:
    name, value = PROBE_SETTING
    assert deployed.envs["api"][name] == deployed.envs["worker"][name] == value


def test_api_in_compose_refuses_to_start_without_api_keys(deployed: Deployed, tmp_path: Path) -> None:
    env = {k: v for k, v in deployed.envs["api"].items() if k != "GRADSERVE_API_KEYS"}
    argv = list(deployed.services["api"]["command"])
    result = subprocess.run(
        [shutil.which(argv[0], path=env["PATH"]), *argv[1:]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "GRADSERVE_API_KEYS" in result.stderr, result.stderr


def test_ready_with_the_compose_worker_and_keys_required(deployed: Deployed) -> None:
    with deployed.client() as c:
        ready = c.get("/readyz").json()
        assert ready["status"] == "ready" and ready["single_user"] is False
        worker = next(w for w in ready["workers"] if w["name"] == f"cpu@{socket.gethostname()}")
        assert worker["queues"] == ["cpu"]
        sessions = next(w for w in ready["workers"] if w["name"] == f"sessions@{socket.gethostname()}")
        assert sessions["queues"] == ["sessions-cpu"] and sessions["threads"] == 1
        assert ready["lanes"] == {"jobs": 1, "sessions": 1}
        assert ready["sweeper"]["pid"] == deployed.procs["sweeper"].pid  # leading: sweeps are driven
        assert httpx.post(f"{deployed.url}/v1/networks", json=LENET_SPEC).status_code == 401
        created = c.post("/v1/networks", json=LENET_SPEC)
        assert created.status_code == 201, created.text
        assert c.get(f"/v1/networks/{created.json()['id']}").json()["num_elements"] == 61706


def _require_route(deployed: Deployed, path: str) -> None:
    with deployed.client() as c:
        paths = c.get("/openapi.json").json()["paths"]
    if path not in paths:
        pytest.skip(f"{path} is not served yet; this part runs once the API has it")


def test_tutorial_session_through_the_compose_services(deployed: Deployed) -> None:
    _require_route(deployed, "/v1/sessions")
    with deployed.client() as c:
        network_id = c.post("/v1/networks", json=LENET_SPEC).json()["id"]
        created = c.post(
            "/v1/sessions",
            json={"network_id": network_id, "seed": 0, "device": "auto", "optimizer": {"type": "SGD", "lr": 0.01}},
        )
        assert created.status_code == 201, created.text
        session = created.json()
        assert session["device"] == "cpu"
        base = f"/v1/sessions/{session['id']}"
        forward = c.post(f"{base}/forward", json={"input": {"randn": [1, 1, 32, 32], "seed": 7}})
        assert forward.status_code == 200, forward.text
        assert forward.json()["shape"] == [1, 10] and forward.json()["grad_fn"] == "AddmmBackward0"
        loss = c.post(f"{base}/loss", json={"criterion": {"type": "MSELoss"}, "target": {"randn": [1, 10], "seed": 8}})
        assert loss.status_code == 200 and loss.json()["grad_fn"] == "MseLossBackward0", loss.text
        assert c.post(f"{base}/zero_grad", json={}).status_code == 200
        assert c.post(f"{base}/backward", json={}).status_code == 200
        grad = c.get(f"{base}/parameters/conv1.bias").json()["grad"]
        assert len(grad) == 6 and any(g != 0 for g in grad)
        assert c.post(f"{base}/step").status_code == 200
        # The image installs Graphviz for this; here `dot` comes from the machine, when it has one.
        if shutil.which("dot"):
            svg = c.get(f"{base}/graph", params={"format": "svg"})
            assert svg.status_code == 200 and "<svg" in svg.text, svg.text[:300]


def test_training_job_through_the_compose_services(deployed: Deployed) -> None:
    _require_route(deployed, "/v1/jobs")
    job = {
        "network": LENET_SPEC,
        "seed": 0,
        "device": "auto",
        "batch_size": 8,
        "steps": 6,
        "dataset": {"source": "random", "num_samples": 32, "num_classes": 10, "seed": 1},
        "criterion": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9},
        "capture": {"checkpoint_every": 3},
    }
    with deployed.client() as c:
        submitted = c.post("/v1/jobs", json=job)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 120
        while (state := c.get(f"/v1/jobs/{job_id}").json())["status"] in {"queued", "running"}:
            assert time.monotonic() < deadline, f"job still {state['status']}:\n{deployed.log_tail()}"
            time.sleep(0.2)
        assert state["status"] == "succeeded", f"{state}\n{deployed.log_tail()}"
        assert state["step"] == 6 and state.get("device_used") in {None, "cpu"}
        assert len(c.get(f"/v1/jobs/{job_id}/metrics").json()["loss"]) == 6


def test_worker_stops_within_its_grace_period_and_readiness_follows(deployed: Deployed) -> None:
    """Runs last: a SIGTERM'd idle worker leaves well inside stop_grace_period, and the checks notice."""
    grace = deployed.services["worker"]["stop_grace_period"]
    grace_s = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"([\d.]+)([hms])", grace))
    # Both lanes: here they share one host name, which in compose each container has to itself.
    for name in ("worker", "worker-sessions"):
        took = _stop(deployed.procs[name], grace_s)
        assert took < grace_s, f"{name} took {took:.0f} s to stop; compose kills it after {grace}"
    assert deployed.healthcheck("worker").returncode == 1
    with deployed.client() as c:
        assert c.get("/readyz").status_code == 503
