"""The fault suite's own service: ``gradserve up`` on a ``redis-server`` the tests own (AOF on, a
password, killed and restarted at will), short fault bounds, and tenants of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from launcher.embedded_redis import free_port, redis_server_binary
from tests.conftest import Service, start_service, stop_service

PASSWORD = "fault-suite-s3cret"
PREFIX = "gsf"
TENANTS = {t: f"key-{t}-0123456789" for t in ("alice", "bob", "carol", "dave")}
QUOTA_BYTES = 24 * 2**20


@dataclass
class OwnRedis:
    """A redis-server with AOF on a fixed port and directory, so a restart finds its data again."""

    data_dir: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [str(redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        args += ["--maxmemory-policy", "noeviction", "--requirepass", PASSWORD, "--loglevel", "warning"]
        args += ["--logfile", str(self.data_dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                assert time.monotonic() < deadline, (self.data_dir / "redis.log").read_text()[-2000:]
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


# Package scope: the fault suite's service stops once its tests are done, not at the end of the whole run.
@pytest.fixture(scope="package")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("fault-redis"), free_port())
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


@pytest.fixture(scope="package")
def fault_service(tmp_path_factory: pytest.TempPathFactory, own_redis: OwnRedis) -> Iterator[Service]:
    env = {
        "REDIS_URL": own_redis.url,
        "GRADSERVE_API_KEYS": ",".join(f"{k}:{t}" for t, k in TENANTS.items()),
        "GRADSERVE_KEY_PREFIX": PREFIX,
        "GRADSERVE_JOB_LEASE_TTL_S": "3",
        "GRADSERVE_JOB_REAPER_INTERVAL_S": "0.5",
        "GRADSERVE_TENANT_STORAGE_BYTES": str(QUOTA_BYTES),
        # Jobs book their records' bound against the quota: keep long test jobs' bound small.
        "GRADSERVE_JOB_MAX_RECORDS": "2000",
        "GRADSERVE_REDIS_HEALTH_CHECK_INTERVAL_S": "1",
    }
    svc = start_service(tmp_path_factory.mktemp("fault-service"), workers=2, extra_env=env)
    svc.keys = dict(TENANTS)
    yield svc
    stop_service(svc)


@contextmanager
def message_taken_by_a_dying_worker(service: Service, own_redis: OwnRedis, lane: str, queue: str) -> Iterator[None]:
    """Inside: every worker of ``lane`` is stopped, so the message sent there is handed to one's pending
    BRPOP, as Redis does while a SIGKILLed worker's sockets outlive it; on leaving, they are SIGKILLed.

    A stopped worker's BRPOP lapses within kombu's 1 s poll, so the message must go out at once; when
    it still lands in the queue (no BRPOP was pending), the caller sees ``AssertionError`` and nothing
    was lost. The supervisor starts new workers in their place.
    """
    key = f"{PREFIX}:celery:{queue}"
    r = own_redis.client()
    # The push is seen as it happens (a keyspace event), not guessed at by a sleep: Redis hands a pushed
    # message to a pending BRPOP before it serves another command, so the LLEN after the event tells.
    r.config_set("notify-keyspace-events", "Kl")
    pushes = r.pubsub(ignore_subscribe_messages=True)
    pushes.subscribe(f"__keyspace@0__:{key}")
    pids = [w["pid"] for w in service.wait_workers(2, lane=lane)]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
        deadline = time.monotonic() + 30
        while (event := pushes.get_message(timeout=1.0)) is None or event["data"] != b"lpush":
            assert time.monotonic() < deadline, f"nothing was pushed onto {key}"
        assert r.llen(key) == 0, "no stopped worker took the message"
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        pushes.close()
        r.config_set("notify-keyspace-events", "")
