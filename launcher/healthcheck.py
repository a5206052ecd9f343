"""Container healthchecks: ``python -m launcher.healthcheck [api|worker] [--port N]``, exit 0 when healthy.

- ``api``: ``GET /readyz`` on this container answers 200, i.e. Redis answers and a worker is alive.
- ``worker``: a worker on this host has a live heartbeat in Redis, i.e. it booted, reached Redis and
  its process still runs (the heartbeat thread beats during long jobs too).

Without a role it is read from PID 1's command line, so the image's one HEALTHCHECK fits both the
API and worker containers. Docker runs this every interval, so it stays light: no torch import.
"""

from __future__ import annotations

import itertools
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import click

ROLES = ("api", "worker")


def container_command(proc_cmdline: Path = Path("/proc/1/cmdline")) -> list[str]:
    try:
        return [arg for arg in proc_cmdline.read_bytes().decode(errors="replace").split("\0") if arg]
    except OSError:
        return []


def detect(argv: list[str]) -> tuple[str, int]:
    """The role and API port a container runs, from its command (``gradserve api --port 8000 ...``)."""
    role = next((arg for arg in argv if arg in ROLES), "api")
    port = 8000
    for flag, value in itertools.pairwise(argv):
        if flag == "--port" and value.isdigit():
            port = int(value)
    return role, port


def check_api(port: int, timeout_s: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout_s):
            return None
    except urllib.error.HTTPError as exc:
        return f"/readyz answered {exc.code}: {exc.read()[:300].decode(errors='replace')}"
    except OSError as exc:
        return f"/readyz unreachable on port {port}: {exc}"


def check_worker(hostname: str | None = None) -> str | None:
    import redis

    from models.settings import get_settings
    from models.store.keys import Keys

    settings = get_settings()
    if settings.redis_url is None:
        return "REDIS_URL is not set"
    suffix = f"@{hostname or socket.gethostname()}"
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        names = [k.decode() for k in client.scan_iter(match=Keys(settings.key_prefix).worker_pattern(), count=200)]
    except redis.RedisError as exc:
        return f"Redis unreachable: {exc}"
    finally:
        client.close()
    if not any(name.endswith(suffix) for name in names):
        return f"no live worker heartbeat for a worker named *{suffix}"
    return None


@click.command(help="Exit 0 when this container is healthy: the API answers GET /readyz, or a worker here beats.")
@click.argument("role", required=False, type=click.Choice(ROLES))  # default: from PID 1's command line
@click.option("--port", type=int, default=None, help="the API's port (default: from PID 1, else 8000)")
def healthcheck(role: str | None, port: int | None) -> None:
    detected_role, detected_port = detect(container_command())
    role = role or detected_role
    problem = check_api(port or detected_port) if role == "api" else check_worker()
    if problem:
        print(f"unhealthy {role}: {problem}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    from launcher.cli import run_click

    return run_click(healthcheck, "python -m launcher.healthcheck", argv)


if __name__ == "__main__":
    sys.exit(main())
