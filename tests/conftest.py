"""Shared fixtures. Integration tests run against the real thing: ``gradserve up`` started as a
subprocess on a free port, with real worker processes and a real Redis (the embedded one, or
``REDIS_URL`` when set), driven over HTTP with httpx."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from launcher.spawn import spawn_up

ROOT = Path(__file__).resolve().parent.parent
API_KEYS = {"alice": "key-alice-0123456789", "bob": "key-bob-0123456789"}
WORKERS = 2
SESSION_WORKERS = 2


@dataclass
class Service:
    url: str
    redis_url: str
    proc: subprocess.Popen
    log: Path
    keys: dict[str, str] = field(default_factory=lambda: dict(API_KEYS))

    def client(self, tenant: str = "alice", **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, **kwargs)

    def workers(self, lane: str | None = None) -> list[dict]:
        """Live workers as /readyz lists them; ``lane``: only those of ``jobs`` or ``sessions``."""
        with self.client() as c:
            found = c.get("/readyz").json()["workers"]
        return [w for w in found if lane is None or lane in w.get("lanes", [])]

    def wait_workers(
        self, count: int, *, exclude_pids: set[int] = frozenset(), timeout: float = 90, lane: str | None = None
    ) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = [w for w in self.workers(lane) if w["pid"] not in exclude_pids and _pid_alive(w["pid"])]
            if len(alive) >= count:
                return alive
            time.sleep(0.2)
        raise TimeoutError(f"fewer than {count} workers after {timeout} s; log: {self.log.read_text()[-3000:]}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start_service(
    tmp: Path,
    *,
    workers: int = WORKERS,
    session_workers: int = SESSION_WORKERS,
    extra_env: dict[str, str | None] | None = None,
) -> Service:
    """Start `gradserve up`; ``extra_env`` values of None remove that variable."""
    env = {
        **os.environ,
        "GRADSERVE_API_KEYS": ",".join(f"{k}:{t}" for t, k in API_KEYS.items()),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    up = spawn_up(
        tmp,
        workers=workers,
        session_workers=session_workers,
        env={k: v for k, v in env.items() if v is not None},
    )
    proc, log = up.proc, up.log
    text = log.read_text()
    found = re.search(r"(?:embedded Redis at|using Redis at) (\S+)", text)
    return Service(url=up.url, redis_url=found.group(1) if found else "", proc=proc, log=log)


def stop_service(service: Service) -> None:
    service.proc.send_signal(signal.SIGTERM)
    try:
        service.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        service.proc.kill()


@contextmanager
def running_service(tmp: Path, **kwargs: Any) -> Iterator[Service]:
    """A `gradserve up` of a module's own (``start_service``'s options), stopped afterwards."""
    svc = start_service(tmp, **kwargs)
    try:
        yield svc
    finally:
        stop_service(svc)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(tmp_path_factory.mktemp("gradserve"))
    yield svc
    stop_service(svc)


@pytest.fixture
def client(service: Service) -> Iterator[httpx.Client]:
    with service.client("alice") as c:
        yield c


@pytest.fixture
def client_bob(service: Service) -> Iterator[httpx.Client]:
    with service.client("bob") as c:
        yield c


@pytest.fixture
def session_threads(service: Service) -> Iterator[int]:
    """Local runs use the session workers' thread count while the test runs: the bits a reduction gives
    depend on how many threads split it, and the service's answers say theirs (``threads``)."""
    counts = {w["threads"] for w in service.workers("sessions")}
    assert len(counts) == 1, counts
    before = torch.get_num_threads()
    torch.set_num_threads(counts.pop())
    yield torch.get_num_threads()
    torch.set_num_threads(before)


def detail_of(response: httpx.Response) -> dict:
    """The first error of a 422 response (FastAPI's list form), or the detail string wrapped."""
    body = response.json()
    detail = body["detail"]
    return detail[0] if isinstance(detail, list) else {"msg": detail}


def dumps(obj: object) -> str:
    return json.dumps(obj, indent=1)[:2000]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the live service, so ``-m "not integration"`` starts nothing.

    A test needs it when it lives under tests/integration/ or asks for the ``service`` fixture
    (directly or through ``client``); marking by rule rather than by hand, a new file cannot forget.
    """
    integration = ROOT / "tests" / "integration"
    for item in items:
        if Path(item.fspath).is_relative_to(integration) or "service" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@dataclass
class S3Server:
    """moto's standalone S3 server on a free loopback port, in this process: ``stop`` and ``start`` make an
    outage and end it with the objects kept (moto's backends live in the process, not the server)."""

    port: int
    bucket: str = "gradserve-test"
    access_key: str = "AKIATESTKEY0123456789"
    secret_key: str = "s3cret-test-key-do-not-echo-0123456789"
    server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def env(self, prefix: str) -> dict[str, str]:
        """The settings that point a stack (or ``Settings``) at this bucket under ``prefix``."""
        return {
            "GRADSERVE_ARTIFACTS_URL": f"s3://{self.bucket}/{prefix}",
            "GRADSERVE_S3_ENDPOINT_URL": self.endpoint,
            "GRADSERVE_S3_ACCESS_KEY_ID": self.access_key,
            "GRADSERVE_S3_SECRET_ACCESS_KEY": self.secret_key,
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    import socket

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = S3Server(port)
    server.start()
    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=server.bucket)
    try:
        yield server
    finally:
        server.stop()
