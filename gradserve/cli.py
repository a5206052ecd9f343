"""``gradserve jobs ...`` and ``gradserve sessions ...``: the client from a shell.

Exit codes a script can rely on: 0 the job succeeded (or the command did what it said), 1 the job
failed, 3 it was cancelled, 4 the service refused the request (the message says why), 2 bad usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.table import Table

from gradserve.client import Client
from gradserve.errors import APIError

EXIT = {"succeeded": 0, "failed": 1, "cancelled": 3}
EXIT_API = 4


class _Group(click.Group):
    """Service errors as one readable line and exit code 4, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (APIError, httpx.HTTPError) as exc:
            click.echo(f"gradserve: {exc}", err=True)
            ctx.exit(EXIT_API)


def _client_options(f: Any) -> Any:
    f = click.option("--api-key", envvar="GRADSERVE_API_KEY", default=None, help="Bearer key ($GRADSERVE_API_KEY).")(f)
    return click.option(
        "--url", envvar="GRADSERVE_URL", default="http://127.0.0.1:8000", show_default=True, help="($GRADSERVE_URL)"
    )(f)


@click.group(cls=_Group)
@_client_options
@click.pass_context
def jobs(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Training jobs: submit, list, watch, cancel, download checkpoints."""
    ctx.obj = ctx.with_resource(Client(url, api_key))


@click.group(cls=_Group)
@_client_options
@click.pass_context
def sessions(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Interactive sessions: list and delete."""
    ctx.obj = ctx.with_resource(Client(url, api_key))


def read_job_file(path: Path) -> dict[str, Any]:
    """A job request from a .json or .yaml file (the body of POST /v1/jobs)."""
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        body = yaml.safe_load(text)
    else:
        body = json.loads(text)
    if not isinstance(body, dict):
        raise click.BadParameter(f"{path} must hold one object (the job request)", param_hint="FILE")
    return body


def _watch(client: Client, job_id: str) -> int:
    doc = client.jobs.get(job_id).watch(Console())
    return EXIT.get(doc["status"], 1)


@jobs.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--watch", is_flag=True, help="Follow it to the end; the exit code is then the job's outcome.")
@click.pass_obj
def submit(client: Client, file: Path, watch: bool) -> None:
    """Submit the job request in FILE (.json or .yaml)."""
    job = client.jobs.submit_body(read_job_file(file))
    click.echo(job.id)
    if watch:
        sys.exit(_watch(client, job.id))


@jobs.command("watch")
@click.argument("job_id")
@click.pass_obj
def watch_job(client: Client, job_id: str) -> None:
    """Follow a job live; exits 0 if it succeeded, 1 if it failed, 3 if cancelled."""
    sys.exit(_watch(client, job_id))


@jobs.command("ls")
@click.option("--status", type=click.Choice(["queued", "running", "succeeded", "failed", "cancelled"]))
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The raw list, one JSON document.")
@click.pass_obj
def list_jobs(client: Client, status: str | None, limit: int, as_json: bool) -> None:
    """The tenant's jobs, newest first."""
    data = client.jobs.list(status=status, limit=limit)
    if as_json:
        click.echo(json.dumps(data))
        return
    table = Table("id", "status", "step", "loss", "val_accuracy", "error")
    for doc in data:
        table.add_row(
            doc["id"],
            doc["status"],
            f"{doc.get('step')}/{doc.get('total_steps')}",
            _num(doc.get("loss")),
            _num(doc.get("val_accuracy")),
            (doc.get("error") or "")[:60],
        )
    Console(width=200).print(table)


def _num(value: Any) -> str:
    return "" if value is None else f"{float(value):.4f}"


@jobs.command("cancel")
@click.argument("job_id")
@click.pass_obj
def cancel(client: Client, job_id: str) -> None:
    """Cancel a job (a running one stops after its current step)."""
    click.echo(f"{job_id} {client.jobs.get(job_id).cancel()['status']}")


@jobs.command("checkpoint")
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--step", type=int, default=None, help="A checkpoint by step (default: the last).")
@click.pass_obj
def checkpoint(client: Client, job_id: str, output: Path, step: int | None) -> None:
    """Save a job's weights as a safetensors file (safetensors.torch.load_file reads it)."""
    blob = client.jobs.get(job_id).checkpoint_bytes(step)
    output.write_bytes(blob)
    click.echo(f"{output} ({len(blob):,} bytes)")


@sessions.command("ls")
@click.option("--json", "as_json", is_flag=True, help="The raw list, one JSON document.")
@click.pass_obj
def list_sessions(client: Client, as_json: bool) -> None:
    """The tenant's sessions."""
    data = client.sessions.list()
    if as_json:
        click.echo(json.dumps(data))
        return
    table = Table("id", "network", "device", "parameters")
    for doc in data:
        name = (doc.get("repr") or "").split("(", 1)[0]
        table.add_row(doc["id"], name, str(doc.get("device", "")), str(doc.get("num_parameters", "")))
    Console(width=200).print(table)


@sessions.command("rm")
@click.argument("session_ids", nargs=-1, required=True)
@click.pass_obj
def remove_sessions(client: Client, session_ids: tuple[str, ...]) -> None:
    """Delete sessions."""
    for sid in session_ids:
        client.sessions.delete(sid)
        click.echo(f"{sid} deleted")


COMMANDS = {"jobs": jobs, "sessions": sessions}
_GLOBAL = ("--url", "--api-key")


def _global_first(args: list[str]) -> list[str]:
    """``--url``/``--api-key`` are accepted anywhere (``gradserve jobs ls --url ...``): moved to the group."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _GLOBAL and i + 1 < len(args):
            front += args[i : i + 2]
            i += 2
            continue
        (front if arg.split("=", 1)[0] in _GLOBAL else rest).append(arg)
        i += 1
    return front + rest


def main(argv: list[str]) -> int:
    """Run ``gradserve jobs|sessions ...`` (``argv`` from the word after ``gradserve``)."""
    group = COMMANDS[argv[0]]
    try:
        group.main(args=_global_first(argv[1:]), prog_name=f"gradserve {argv[0]}", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
