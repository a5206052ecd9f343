"""``gradserve jobs ...``, ``gradserve sweeps ...`` and ``gradserve sessions ...``: the client from a shell.

Exit codes a script can rely on: 0 the job (or sweep) succeeded, or the command did what it said; 1 it
failed; 3 it was cancelled (a job also when its sweep pruned it); 4 the service refused the request (the
message says why); 2 bad usage.
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
from gradserve.protocol.states import JobStatus, SweepStatus

EXIT = {"succeeded": 0, "failed": 1, "cancelled": 3, "pruned": 3, "paused": 5}
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


@click.group(cls=_Group)
@_client_options
@click.pass_context
def sweeps(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Hyperparameter sweeps: create, watch (a live table of trials), list, cancel, delete."""
    ctx.obj = ctx.with_resource(Client(url, api_key))


def read_job_file(path: Path, what: str = "the job request") -> dict[str, Any]:
    """A request body from a .json or .yaml file (POST /v1/jobs, POST /v1/sweeps)."""
    import yaml

    as_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        text = path.read_text(encoding="utf-8")
        body = yaml.safe_load(text) if as_yaml else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:  # UnicodeDecodeError is a ValueError
        kind = "YAML" if as_yaml else "JSON (files ending .yaml or .yml are read as YAML)"
        raise click.BadParameter(f"{path} is not valid {kind}: {exc}", param_hint="FILE") from exc
    if not isinstance(body, dict):
        raise click.BadParameter(f"{path} must hold one object ({what})", param_hint="FILE")
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


@jobs.command("fork")
@click.argument("job_id")
@click.option("--step", type=int, default=None, help="A checkpoint the job keeps (default: its last).")
@click.option("--lr", type=float, default=None, help="The parent's optimizer with this learning rate.")
@click.option("--epochs", type=int, default=None, help="Epochs in all, counting the parent's up to the fork.")
@click.option("--steps", type=int, default=None, help="Steps in all, counting the parent's up to the fork.")
@click.option("--name", default=None, help="The fork's name.")
@click.option("--changes", "changes_json", default=None, help="More changes as JSON: '{\"optimizer\": {...}}'.")
@click.option("--watch", is_flag=True, help="Follow it to the end; the exit code is then the fork's outcome.")
@click.pass_obj
def fork(
    client: Client,
    job_id: str,
    step: int | None,
    lr: float | None,
    epochs: int | None,
    steps: int | None,
    name: str | None,
    changes_json: str | None,
    watch: bool,
) -> None:
    """Start a job from one of JOB_ID's checkpoints, with changes; with none it repeats the parent exactly."""
    changes: dict[str, Any] = {}
    if changes_json:
        try:
            changes = json.loads(changes_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--changes") from exc
        if not isinstance(changes, dict):
            raise click.BadParameter("must be one JSON object", param_hint="--changes")
    given = {"lr": lr, "epochs": epochs, "steps": steps, "name": name}
    changes.update({k: v for k, v in given.items() if v is not None})
    try:
        child = client.jobs.get(job_id).fork(step, **changes)
    except ValueError as exc:  # the changes contradict each other (checked before any request)
        raise click.BadParameter(str(exc), param_hint="--lr") from exc
    click.echo(child.id)
    if watch:
        sys.exit(_watch(client, child.id))


@jobs.command("watch")
@click.argument("job_id")
@click.pass_obj
def watch_job(client: Client, job_id: str) -> None:
    """Follow a job live; exits 0 if it succeeded, 1 if it failed, 3 if cancelled, 5 if a breakpoint paused it."""
    sys.exit(_watch(client, job_id))


@jobs.command("ls")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]))
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


@jobs.command("resume")
@click.argument("job_id")
@click.option("--lr", type=float, default=None, help="Every parameter group's learning rate from here on.")
@click.option("--skip-batch", is_flag=True, help="Leave out the paused step's batches.")
@click.option("--watch", "follow", is_flag=True, help="Follow it on; the exit code is then the job's outcome.")
@click.pass_obj
def resume(client: Client, job_id: str, lr: float | None, skip_batch: bool, follow: bool) -> None:
    """Resume a job a breakpoint paused, from the step it paused on."""
    click.echo(f"{job_id} {client.jobs.get(job_id).resume(lr=lr, skip_batch=skip_batch)['status']}")
    if follow:
        sys.exit(_watch(client, job_id))


@jobs.command("debug")
@click.argument("job_id")
@click.option("--step", type=int, default=None, help="The step to open (default: the step a breakpoint paused on).")
@click.pass_obj
def debug(client: Client, job_id: str, step: int | None) -> None:
    """Open a Python prompt on the job's state before a step: ``net`` (a live session) and ``batch``."""
    import code

    import torch

    net = client.jobs.get(job_id).session(step=step)
    batch = net.batch
    banner = (
        f"job {job_id} before step {batch.step}: net (a live session; its state is the job's), "
        f"batch.inputs {list(batch.inputs.shape)}, batch.targets {list(batch.targets.shape)}.\n"
        "Try: out = net(batch.inputs); loss = net.loss({...the job's criterion...}, out, batch.targets); "
        "loss.backward(). The session is deleted at exit."
    )
    try:
        code.interact(banner=banner, local={"net": net, "batch": batch, "torch": torch, "client": client}, exitmsg="")
    finally:
        net.delete()


@jobs.command("checkpoint")
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--step", type=int, default=None, help="A checkpoint by step (default: the last).")
@click.pass_obj
def checkpoint(client: Client, job_id: str, output: Path, step: int | None) -> None:
    """Save a job's weights as a safetensors file (safetensors.torch.load_file reads it)."""
    blob = client.jobs.get(job_id).checkpoint_bytes(step)
    try:
        output.write_bytes(blob)
    except OSError as exc:
        raise click.BadParameter(f"cannot write {output}: {exc.strerror}", param_hint="-o/--output") from exc
    click.echo(f"{output} ({len(blob):,} bytes)")


SWEEP_EXIT = {"succeeded": 0, "failed": 1, "cancelled": 3}


def _watch_sweep(client: Client, sweep_id: str) -> int:
    doc = client.sweeps.get(sweep_id).watch(Console())
    return SWEEP_EXIT.get(doc["status"], 1)


@sweeps.command("create")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--watch", is_flag=True, help="Follow it to the end; the exit code is then the sweep's outcome.")
@click.pass_obj
def create_sweep(client: Client, file: Path, watch: bool) -> None:
    """Start the sweep in FILE (.json or .yaml: template, space, objective, max_trials, parallelism, pruner)."""
    sweep = client.sweeps.create_body(read_job_file(file, "the sweep request"))
    click.echo(sweep.id)
    if watch:
        sys.exit(_watch_sweep(client, sweep.id))


@sweeps.command("watch")
@click.argument("sweep_id")
@click.pass_obj
def watch_sweep(client: Client, sweep_id: str) -> None:
    """A live table of the sweep's trials; exits 0 if it succeeded, 3 if cancelled, 1 if it failed."""
    sys.exit(_watch_sweep(client, sweep_id))


@sweeps.command("show")
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="The raw document (GET /v1/sweeps/{id}).")
@click.pass_obj
def show_sweep(client: Client, sweep_id: str, as_json: bool) -> None:
    """The sweep's trials, best trial and parameter importances, once."""
    from gradserve.sweep_view import table

    doc = client.sweeps.get(sweep_id).last
    if as_json:
        click.echo(json.dumps(doc))
        return
    console = Console(width=200)
    console.print(table(doc))
    for param, weight in sorted((doc.get("importances") or {}).items(), key=lambda kv: -kv[1]):
        console.print(f"importance {param}: {weight:.3f}", highlight=False)


@sweeps.command("ls")
@click.option("--status", type=click.Choice([s.value for s in SweepStatus]))
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The raw list, one JSON document.")
@click.pass_obj
def list_sweeps(client: Client, status: str | None, limit: int, as_json: bool) -> None:
    """The tenant's sweeps, newest first, with their trial counts and best values."""
    data = client.sweeps.list(status=status, limit=limit)
    if as_json:
        click.echo(json.dumps(data))
        return
    table = Table("id", "name", "status", "trials", "objective", "best")
    for doc in data:
        objective = f"{doc['objective']['direction']} {doc['objective']['metric']}"
        trials = f"{doc['trials']}/{doc['max_trials']}"
        table.add_row(doc["id"], doc.get("name") or "", doc["status"], trials, objective, _num(doc["best_value"]))
    Console(width=200).print(table)


@sweeps.command("cancel")
@click.argument("sweep_id")
@click.pass_obj
def cancel_sweep(client: Client, sweep_id: str) -> None:
    """Start no more trials and cancel the running ones."""
    click.echo(f"{sweep_id} {client.sweeps.get(sweep_id).cancel()['status']}")


@sweeps.command("rm")
@click.argument("sweep_ids", nargs=-1, required=True)
@click.pass_obj
def remove_sweeps(client: Client, sweep_ids: tuple[str, ...]) -> None:
    """Delete ended sweeps (their trials stay, as jobs); one that cannot be deleted does not stop the rest."""
    refused = 0
    for sid in sweep_ids:
        try:
            client.sweeps.get(sid).delete()
        except APIError as exc:
            click.echo(f"gradserve: {exc}", err=True)
            refused += 1
            continue
        click.echo(f"{sid} deleted")
    if refused:
        sys.exit(EXIT_API)


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


COMMANDS = {"jobs": jobs, "sweeps": sweeps, "sessions": sessions}
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
    """Run ``gradserve jobs|sweeps|sessions ...`` (``argv`` from the word after ``gradserve``)."""
    group = COMMANDS[argv[0]]
    try:
        group.main(args=_global_first(argv[1:]), prog_name=f"gradserve {argv[0]}", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
