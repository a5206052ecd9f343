"""``job.watch()``: the job's event stream drawn as a live progress bar (step/total, loss, accuracy,
samples/s, ETA) on a terminal, or as plain lines elsewhere; it ends with the job's final state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Watched(Protocol):
    """What ``watch`` reads of a ``gradserve.jobs.Job``."""

    id: str

    def refresh(self) -> dict[str, Any]: ...
    def events(self) -> Iterator[tuple[str, dict[str, Any]]]: ...


PLAIN_EVERY_S = 1.0  # plain lines (not a terminal): at most one progress line a second, plus epochs and states


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted, or ``-`` when it is missing or not a number."""
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return "-"


def describe(rec: dict[str, Any]) -> str:
    """One metric record as the text beside the bar: loss, accuracy, samples/s."""
    parts = [f"loss {fmt(rec.get('loss'), '.4f')}"]
    if rec.get("accuracy") is not None:
        parts.append(f"acc {fmt(rec['accuracy'], '.3f')}")
    if rec.get("val_accuracy") is not None:
        parts.append(f"val_acc {fmt(rec['val_accuracy'], '.3f')}")
    if rec.get("samples_per_s") is not None:
        parts.append(f"{fmt(rec['samples_per_s'], ',.0f')} samples/s")
    return "  ".join(parts)


def final_line(doc: dict[str, Any]) -> str:
    """The job's final state in one line (what ``gradserve jobs watch`` ends with)."""
    line = f"job {doc['id']} {doc['status']}: step {doc.get('step')}/{doc.get('total_steps')}"
    for name in ("loss", "val_loss", "val_accuracy"):
        if doc.get(name) is not None:
            line += f"  {name} {fmt(doc[name], '.4f')}"
    if doc.get("overall_samples_per_s") is not None:  # as a progress bar ends: the run's average rate
        line += f"  {fmt(doc['overall_samples_per_s'], ',.0f')} samples/s"
    if doc.get("error"):
        line += f"  error: {doc['error']}"
    if doc["status"] == "paused" and doc.get("breakpoint"):
        bp = doc["breakpoint"]
        line += f"  breakpoint {bp['rule']} at step {bp['step']}: {bp['value']}"
        line += f" ({bp['parameter']})" if bp.get("parameter") else ""
    return line


def watch(job: Watched, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    total = job.refresh().get("total_steps")
    if console.is_terminal:
        _watch_bar(job, console, total)
    else:
        _watch_lines(job, console, total)
    doc = job.refresh()
    console.print(final_line(doc), highlight=False, soft_wrap=True)
    return doc


def _watch_bar(job: Watched, console: Console, total: int | None) -> None:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"{job.id[:12]} queued", total=total, stats="")
        for event, data in job.events():
            if event == "metric":
                bar.update(task, completed=data.get("step", 0), stats=describe(data))
            elif event == "state":
                bar.update(task, description=f"{job.id[:12]} {data.get('status')}")


def _watch_lines(job: Watched, console: Console, total: int | None) -> None:
    last_print = 0.0
    epoch = None
    for event, data in job.events():
        if event == "state":
            console.print(f"{job.id} {data.get('status')}", highlight=False)
            continue
        if event != "metric":
            continue
        now = time.monotonic()
        new_epoch = data.get("epoch") != epoch
        epoch = data.get("epoch")
        if now - last_print >= PLAIN_EVERY_S or new_epoch or data.get("val_loss") is not None:
            last_print = now
            console.print(
                f"step {data.get('step')}/{total} epoch {epoch}  {describe(data)}", highlight=False, soft_wrap=True
            )
