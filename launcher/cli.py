"""``gradserve up | api | worker | sweeper``: the one entry point for running the service.

``up`` is for a laptop or a single box: it supervises everything. ``api``, ``worker`` and ``sweeper``
run one part each, which is what docker-compose and other process managers call.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import click

from launcher.privileges import NOTED_ENV, quiet_celery_root_warning, root_notice
from launcher.refusals import refuse_open_single_user
from launcher.tuning import keep_freed_memory
from models.placement import LANE_JOBS, LANE_QUEUES, LANE_SESSIONS, lane_queues
from models.settings import get_settings

CLIENT_COMMANDS = ("jobs", "sweeps", "sessions")


class _Gradserve(click.Group):
    """The client's groups (gradserve.cli) are loaded when named: a worker never imports httpx or rich."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *CLIENT_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in CLIENT_COMMANDS:
            from gradserve.cli import COMMANDS

            return COMMANDS[cmd_name]
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Gradserve, help="Run the service (up, api, worker, sweeper) or use it (jobs, sweeps, sessions).")
def cli() -> None:
    pass


def _host_port(f: Any) -> Any:
    f = click.option("--port", type=int, default=8000, show_default=True)(f)
    return click.option("--host", default="127.0.0.1", show_default=True)(f)


@cli.command(help="API + workers (+ an embedded Redis when REDIS_URL is unset)")
@_host_port
@click.option("--workers", type=int, default=1, help="job worker processes (default 1)")
@click.option(
    "--session-workers", type=int, default=1, help="session worker processes, for interactive calls (default 1)"
)
@click.option(
    "--data-dir",
    envvar="GRADSERVE_DATA_DIR",
    default=".gradserve",
    help="where the embedded Redis keeps its data (default .gradserve; $GRADSERVE_DATA_DIR)",
)
def up(host: str, port: int, workers: int, session_workers: int, data_dir: str) -> None:
    from launcher.supervisor import run_up

    sys.exit(run_up(host=host, port=port, workers=workers, session_workers=session_workers, data_dir=data_dir))


@cli.command(help="the HTTP API alone")
@_host_port
def api(host: str, port: int) -> None:
    sys.exit(run_api(host, port))


@cli.command(help="the sweep controller (one leads, others stand by)")
def sweeper() -> None:
    from api.sweeper import run

    sys.exit(run())


@cli.command(help="one Celery worker process")
@click.option(
    "--lane",
    type=click.Choice(sorted(LANE_QUEUES)),
    default=LANE_JOBS,
    help=f"{LANE_JOBS}: training jobs; {LANE_SESSIONS}: interactive session calls (default {LANE_JOBS})",
)
@click.option(
    "--queues", default=None, help="explicit queues (default: the lane's CPU queue, plus its GPU one with CUDA)"
)
@click.option("--name", default=None, help="Celery node name (default: gradserve-<pid>@<host>)")
@click.option("--loglevel", default="WARNING", show_default=True)
def worker(lane: str, queues: str | None, name: str | None, loglevel: str) -> None:
    sys.exit(run_worker(queues, name, loglevel, lane=lane))


def main(argv: list[str] | None = None) -> int:
    """``gradserve ...``: the exit code of the command (2 for bad usage)."""
    return run_click(cli, "gradserve", argv)


def run_click(command: click.Command, prog: str, argv: list[str] | None = None) -> int:
    """``command``'s exit code, as a script's: click's own for usage (2), the command's for the rest."""
    try:
        command.main(args=sys.argv[1:] if argv is None else argv, prog_name=prog, standalone_mode=True)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # sys.exit("message"): said, as the interpreter would have
            print(exc.code, file=sys.stderr)
            return 1
        return exc.code or 0
    return 0


def run_api(host: str, port: int) -> int:
    import uvicorn

    problem = refuse_open_single_user(host)
    if problem:
        print(f"gradserve: {problem}", file=sys.stderr)
        return 2
    from launcher.guarded_http import GuardedH11Protocol

    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=math.ceil(get_settings().http_keep_alive_s),
        http=GuardedH11Protocol,  # deadlines on reading requests, connections per client capped
    )
    return 0


def run_worker(queues: str | None, name: str | None, loglevel: str, *, lane: str = LANE_JOBS) -> int:
    threads = get_settings().worker_threads
    if threads:
        # Before torch loads: OpenMP sizes its pool once. A worker that owns its share of the cores
        # never waits on another's threads, and its own spin-waiting keeps small ops fast.
        os.environ["OMP_NUM_THREADS"] = str(threads)
    keep_freed_memory()
    quiet_celery_root_warning()
    notice = root_notice()
    if notice and not os.environ.get(NOTED_ENV):  # `gradserve up` said it once for all its workers
        print(f"gradserve: {notice}", file=sys.stderr, flush=True)
    if queues is None:
        import torch

        queues = lane_queues(lane, gpu=torch.cuda.is_available())
    # One process per worker, solo pool: CUDA and fork don't mix, and a session call then runs in
    # the process that holds the model cache, with no hop to a child process.
    argv = [
        "celery",
        "--quiet",
        "-A",
        "worker.celery_app",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        queues,
        "-n",
        name or f"gradserve-{os.getpid()}@%h",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    from celery.bin.celery import main as celery_main

    sys.argv = argv
    return celery_main() or 0
