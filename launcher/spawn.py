"""Start ``gradserve up`` as a child process and wait until it says it is ready: for tests and benchmarks.

The readiness signal is the supervisor's own ``READY`` line, so a test or a benchmark waits for exactly
what a person at the terminal waits for.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.embedded_redis import free_port
from launcher.supervisor import READY

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 180


@dataclass
class Spawned:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def spawn_up(
    data_dir: Path, *, workers: int = 1, session_workers: int = 1, env: dict[str, str] | None = None
) -> Spawned:
    """``gradserve up`` on a free port with its data (and log, ``gradserve-up.log``) under ``data_dir``.

    Raises ``RuntimeError`` with the log's tail when it exits or is not ready within START_TIMEOUT_S.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir / "gradserve-up.log"
    argv = [sys.executable, "-m", "launcher", "up", "--port", str(port), "--workers", str(workers)]
    argv += ["--session-workers", str(session_workers), "--data-dir", str(data_dir / "data")]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while READY not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"gradserve up did not start:\n{log.read_text()[-5000:]}")
        time.sleep(0.2)
    return Spawned(proc, f"http://127.0.0.1:{port}", log)
