"""``gradserve up | api | worker | sweeper``: the one entry point for running the service.

``up`` is for a laptop or a single box: it supervises everything. ``api``, ``worker`` and ``sweeper``
run one part each, which is what docker-compose and other process managers call.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from launcher.privileges import NOTED_ENV, quiet_celery_root_warning, root_notice
from launcher.refusals import refuse_open_single_user
from launcher.tuning import keep_freed_memory
from models.settings import get_settings
from models.tasks import LANE_JOBS, LANE_QUEUES, LANE_SESSIONS, lane_queues

CLIENT_COMMANDS = ("jobs", "sweeps", "sessions")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradserve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in CLIENT_COMMANDS:  # listed in --help; gradserve.cli parses their arguments
        sub.add_parser(name, help=f"the client: gradserve {name} --help")

    up = sub.add_parser("up", help="API + workers (+ an embedded Redis when REDIS_URL is unset)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--workers", type=int, default=1, help="job worker processes (default 1)")
    up.add_argument(
        "--session-workers", type=int, default=1, help="session worker processes, for interactive calls (default 1)"
    )
    up.add_argument(
        "--data-dir",
        default=os.environ.get("GRADSERVE_DATA_DIR", ".gradserve"),
        help="where the embedded Redis keeps its data (default .gradserve)",
    )

    api = sub.add_parser("api", help="the HTTP API alone")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)

    sub.add_parser("sweeper", help="the sweep controller (one leads, others stand by)")

    worker = sub.add_parser("worker", help="one Celery worker process")
    worker.add_argument(
        "--lane",
        choices=sorted(LANE_QUEUES),
        default=LANE_JOBS,
        help=f"{LANE_JOBS}: training jobs; {LANE_SESSIONS}: interactive session calls (default {LANE_JOBS})",
    )
    worker.add_argument(
        "--queues", default=None, help="explicit queues (default: the lane's CPU queue, plus its GPU one with CUDA)"
    )
    worker.add_argument("--name", default=None, help="Celery node name (default: gradserve-<pid>@<host>)")
    worker.add_argument("--loglevel", default="WARNING")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CLIENT_COMMANDS:  # the client's commands: gradserve jobs ..., gradserve sessions ...
        from gradserve.cli import main as client_main

        return client_main(argv)
    args = _parser().parse_args(argv)
    if args.command == "up":
        from launcher.supervisor import run_up

        return run_up(
            host=args.host,
            port=args.port,
            workers=args.workers,
            session_workers=args.session_workers,
            data_dir=args.data_dir,
        )
    if args.command == "api":
        return run_api(args.host, args.port)
    if args.command == "sweeper":
        from api.sweeper import run

        return run()
    return run_worker(args.queues, args.name, args.loglevel, lane=args.lane)


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
