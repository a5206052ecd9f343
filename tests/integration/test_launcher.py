"""`gradserve up` and `gradserve api` as real processes: modes, readiness, and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from launcher.embedded_redis import free_port
from tests.conftest import ROOT, Service, running_service, start_service, stop_service
from tests.lenet import LENET_SPEC


def _descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to ``pid`` (read from /proc; Linux only)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.mark.parametrize("mode", ["embedded", "external"])
def test_up_stops_everything_it_started(tmp_path: Path, service: Service, mode: str) -> None:
    extra = {"REDIS_URL": service.redis_url if mode == "external" else None}
    stack = start_service(tmp_path, workers=1, session_workers=1, extra_env=extra)
    try:
        log = stack.log.read_text()
        assert ("using Redis at" in log) == (mode == "external")
        # Celery's superuser warning came once per worker at every start; root is said once, in our words.
        assert "SecurityWarning" not in log and "superuser" not in log, log
        assert log.count("running as root") == (1 if os.geteuid() == 0 else 0), log
        children = _descendants(stack.proc.pid)
        commands = " | ".join(_cmdline(p) for p in children)
        assert ("redis-server" in commands) == (mode == "embedded"), commands
        assert "launcher api" in commands and "launcher worker" in commands
        with stack.client() as c:
            assert c.post("/v1/networks", json=LENET_SPEC).status_code == 201
    finally:
        stop_service(stack)
    assert stack.proc.returncode == 0
    deadline = time.monotonic() + 10
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(children), [_cmdline(p) for p in _alive(children)]
    assert "stopped" in stack.log.read_text()


def test_single_user_api_needs_no_key_and_stays_on_loopback(service: Service) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRADSERVE_API_KEYS"}
    env["REDIS_URL"] = service.redis_url
    refused = subprocess.run(
        [sys.executable, "-m", "launcher", "api", "--host", "0.0.0.0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in refused.stderr

    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "launcher", "api", "--port", str(port)], cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        # httpx's 5 s default is too short for a fresh API's first shape inference on a loaded box.
        created = httpx.post(f"{url}/v1/networks", json=LENET_SPEC, timeout=60)
        assert created.status_code == 201
        assert httpx.get(f"{url}/readyz", timeout=60).json()["single_user"] is True
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)


def test_up_refuses_a_port_in_use_before_starting_anything(tmp_path: Path) -> None:
    """A taken port used to start Redis, the API and the workers, print a sweep controller's traceback
    and give up 24 s later with "did not become ready"; now one line names the port, and nothing starts."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "GRADSERVE_API_KEYS")}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "launcher", "up", "--port", str(port), "--data-dir", str(tmp_path / "data")]
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "--port" in lines[0], lines
    assert not (tmp_path / "data").exists()  # the embedded Redis never started


def test_up_restarts_a_killed_api_and_keeps_its_workers(tmp_path: Path) -> None:
    """A SIGKILLed API used to stop the whole stack ("the API exited with -9; stopping")."""
    with running_service(tmp_path, workers=1, session_workers=1) as stack:
        before = {w["name"]: w["pid"] for w in stack.workers()}
        apis = [p for p in _descendants(stack.proc.pid) if " launcher api " in _cmdline(p)]
        assert len(apis) == 1, [_cmdline(p) for p in _descendants(stack.proc.pid)]
        os.kill(apis[0], signal.SIGKILL)
        with stack.client() as c:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, stack.log.read_text()[-3000:]
                time.sleep(0.2)
            assert c.post("/v1/networks", json=LENET_SPEC).status_code == 201
        assert {w["name"]: w["pid"] for w in stack.workers()} == before
        assert stack.proc.poll() is None
        log = stack.log.read_text()
        assert "the API exited with -9; restarting it" in log and "stopping" not in log
