"""``gradserve up``: start Redis (if needed), the API, N job workers and M session workers; restart dead workers;
stop all on a signal. Each worker gets its share of the cores (``launcher.threads``).

Children run in their own process groups, so a Ctrl-C reaches only us and we stop them in order (API,
workers, then Redis, which flushes its AOF last). Process groups, not sessions: with the kernel's
scheduler autogroups, a new session is a new CPU-share group, and a worker alone in one is squeezed
onto one core's share whenever anything else runs, where its two OpenMP threads spin-wait for each
other (LeNet training went 10x slower beside one busy process). On Linux each child also gets a parent-death
signal, so even a SIGKILL of this process leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from launcher.embedded_redis import start_redis
from launcher.privileges import NOTED_ENV, root_notice
from launcher.refusals import refuse_open_single_user, refuse_taken_port
from launcher.threads import split_threads, usable_cores
from models.settings import get_settings
from models.store.artifacts import where
from models.store.connect import redacted
from models.tasks import LANE_JOBS, LANE_SESSIONS

READY_TIMEOUT_S = 180
# The line `gradserve up` prints once everything answers; launcher/spawn.py waits for it.
READY = "ready at"
STOP_GRACE_S = 20
_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, process_group=0, preexec_fn=_die_with_parent)


def _say(message: str) -> None:
    print(f"gradserve: {message}", flush=True)


THREADS_ENV = "GRADSERVE_WORKER_THREADS"


class Stack:
    def __init__(self, host: str, port: int, workers: int, session_workers: int, env: dict[str, str]) -> None:
        self.host, self.port, self.env = host, port, env
        self.run_id = uuid.uuid4().hex[:6]
        self.generation = 0
        self.api: subprocess.Popen[bytes] | None = None
        self.sweeper: subprocess.Popen[bytes] | None = None
        # Slot i: job workers first, then session workers; a dead worker is restarted in its slot.
        self.lanes = [LANE_JOBS] * workers + [LANE_SESSIONS] * session_workers
        self.workers: list[subprocess.Popen[bytes] | None] = [None] * len(self.lanes)
        per_job, per_session = split_threads(usable_cores(), workers, session_workers)
        # GRADSERVE_WORKER_THREADS set by the user overrides the split, for every worker.
        fixed = env.get(THREADS_ENV, "0") not in ("", "0")
        self.threads = {
            LANE_JOBS: int(env[THREADS_ENV]) if fixed else per_job,
            LANE_SESSIONS: int(env[THREADS_ENV]) if fixed else per_session,
        }

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start_api(self) -> subprocess.Popen[bytes]:
        self.api = _spawn(
            [sys.executable, "-m", "launcher", "api", "--host", self.host, "--port", str(self.port)], self.env
        )
        return self.api

    def start_sweeper(self) -> None:
        self.sweeper = _spawn([sys.executable, "-m", "launcher", "sweeper"], self.env)

    def start_worker(self, index: int) -> None:
        self.generation += 1
        lane = self.lanes[index]
        tag = f"s{index}" if lane == LANE_SESSIONS else str(index)
        name = f"gradserve-{self.run_id}-{tag}-{self.generation}@%h"
        env = {**self.env, THREADS_ENV: str(self.threads[lane])}
        self.workers[index] = _spawn([sys.executable, "-m", "launcher", "worker", "--lane", lane, "--name", name], env)

    def layout(self) -> str:
        jobs, sessions = self.lanes.count(LANE_JOBS), self.lanes.count(LANE_SESSIONS)
        return (
            f"{jobs} job worker(s) with {self.threads[LANE_JOBS]} thread(s) each, "
            f"{sessions} session worker(s) with {self.threads[LANE_SESSIONS]} thread(s) each, "
            f"of {usable_cores()} core(s)"
        )

    def ready_workers(self) -> int | None:
        """How many workers /readyz lists, or None while the API does not answer."""
        # The workers' names are detail /readyz gives only to callers with an API key.
        keys = list(get_settings().tenants_by_key)
        request = urllib.request.Request(
            f"{self.url}/readyz", headers={"Authorization": f"Bearer {keys[0]}"} if keys else {}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc) if exc.code == 503 else {}
        except (OSError, ValueError):
            return None
        return sum(1 for w in body.get("workers", []) if f"gradserve-{self.run_id}-" in w.get("name", ""))

    def children(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self.api, self.sweeper, *self.workers) if p is not None]

    def stop(self) -> None:
        for proc in self.children():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.children():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_up(*, host: str, port: int, workers: int, session_workers: int = 1, data_dir: str) -> int:
    problem = refuse_open_single_user(host) or refuse_taken_port(host, port)
    if problem:
        _say(problem)
        return 2
    if workers < 1 or session_workers < 1:
        _say("--workers and --session-workers must be at least 1")
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    env = dict(os.environ)
    notice = root_notice()
    if notice:
        _say(notice)
        env[NOTED_ENV] = "1"
    redis_proc = None
    settings = get_settings()
    if settings.redis_url is None:
        redis_proc, url = start_redis(Path(data_dir) / "redis", process_group=0, preexec_fn=_die_with_parent)
        env["REDIS_URL"] = url
        _say(f"embedded Redis at {url} (data in {Path(data_dir) / 'redis'})")
    else:
        _say(f"using Redis at {redacted(settings.redis_url)}")
    if "GRADSERVE_ARTIFACTS_URL" not in env:  # blobs beside the embedded Redis's data, whatever the cwd
        env["GRADSERVE_ARTIFACTS_URL"] = f"file://{(Path(data_dir) / 'artifacts').resolve()}"
    _say(f"artifacts in {where(env['GRADSERVE_ARTIFACTS_URL'])}")
    stack = Stack(host, port, workers, session_workers, env)
    try:
        api = stack.start_api()
        stack.start_sweeper()
        for i in range(len(stack.workers)):
            stack.start_worker(i)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (stack.ready_workers() or 0) < len(stack.workers):
            if stop.is_set() or time.monotonic() > deadline or api.poll() is not None:
                _say("did not become ready; stopping")
                return 1
            time.sleep(0.2)
        mode = "single-user mode (no API keys), loopback only" if settings.single_user else "API keys required"
        _say(f"{READY} {stack.url} with {stack.layout()}; {mode}; docs at {stack.url}/docs")
        return _supervise(stack, stop, redis_proc)
    finally:
        stack.stop()
        if redis_proc is not None and redis_proc.poll() is None:
            redis_proc.terminate()
            try:
                redis_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                redis_proc.kill()
        _say("stopped")


# A dead API is restarted after 0.5, 1, 2, 4, 8 s; the sixth death within API_RESTART_WINDOW_S stops
# everything, since an API that cannot stay up (a bad setting, the port taken) will not get better.
API_RESTART_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
API_RESTART_WINDOW_S = 300.0


class ApiRestarts:
    """When the API may be started again: bounded, with a backoff that resets once it stays up."""

    def __init__(self) -> None:
        self.deaths: list[float] = []

    def delay_after_death(self, now: float) -> float | None:
        """Seconds to wait before the next start, or None when it has died too often to try again."""
        self.deaths = [t for t in self.deaths if now - t < API_RESTART_WINDOW_S] + [now]
        if len(self.deaths) > len(API_RESTART_DELAYS_S):
            return None
        return API_RESTART_DELAYS_S[len(self.deaths) - 1]


def _supervise(stack: Stack, stop: threading.Event, redis_proc: subprocess.Popen[bytes] | None) -> int:
    restarts = ApiRestarts()
    while not stop.wait(0.5):
        if stack.api is not None and stack.api.poll() is not None:
            # The workers and Redis do not depend on the API process: only the API is started again.
            delay = restarts.delay_after_death(time.monotonic())
            if delay is None:
                deaths = len(restarts.deaths)
                window = f"{API_RESTART_WINDOW_S:g} s"
                _say(f"the API exited with {stack.api.returncode}, {deaths} times within {window}; stopping")
                return 1
            _say(f"the API exited with {stack.api.returncode}; restarting it in {delay:g} s")
            if stop.wait(delay):
                break
            stack.start_api()
        if redis_proc is not None and redis_proc.poll() is not None:
            _say(f"the embedded Redis exited with {redis_proc.returncode}; stopping")
            return 1
        if stack.sweeper is not None and stack.sweeper.poll() is not None:
            _say(f"the sweeper exited with {stack.sweeper.returncode}; starting a new one")
            stack.start_sweeper()
        for i, proc in enumerate(stack.workers):
            if proc is not None and proc.poll() is not None:
                _say(f"{stack.lanes[i]} worker {i} exited with {proc.returncode}; starting a new one")
                stack.start_worker(i)
    return 0
