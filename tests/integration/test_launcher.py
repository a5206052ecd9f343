"""`gradserve up` and `gradserve api` as real processes: modes, readiness, and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from launcher.embedded_redis import free_port
from tests.conftest import ROOT, Service, start_service, stop_service
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
