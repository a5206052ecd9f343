"""``sweep.watch()``: a sweep's trials as a live table on a terminal (state, params, held-out metric per
epoch, value; the best row marked), or one line per trial change elsewhere; it ends with one line that
says how the sweep ended and its best trial."""

from __future__ import annotations

import time
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from gradserve.progress import fmt
from gradserve.protocol.states import SWEEP_TERMINAL


class Watched(Protocol):
    """What ``watch`` reads of a ``gradserve.sweeps.Sweep``."""

    def refresh(self) -> dict[str, Any]: ...


def _g(value: Any) -> str:
    return fmt(value, ".4g")


STATE_STYLE = {"running": "cyan", "complete": "green", "pruned": "yellow", "failed": "red", "cancelled": "magenta"}


def params_text(params: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_g(v) if isinstance(v, float) else v}" for k, v in params.items())


def _metric(doc: dict[str, Any]) -> str:
    return str((doc.get("objective") or {}).get("metric", "value"))


def table(doc: dict[str, Any]) -> Table:
    """The trials of a sweep document, best row in bold."""
    best = (doc.get("best") or {}).get("number")
    metric = _metric(doc)
    out = Table("#", "state", "params", f"{metric} by epoch", metric, "job", title=heading(doc), title_justify="left")
    for t in doc.get("trials", []):
        epochs = t.get("intermediate") or {}
        last = f"{_g(epochs[max(epochs, key=int)])} @ {max(epochs, key=int)}" if epochs else "-"
        state = Text(t["state"], style=STATE_STYLE.get(t["state"], ""))
        out.add_row(
            str(t["number"]),
            state,
            params_text(t["params"]),
            last,
            _g(t.get("value")),
            t.get("job_id") or (t.get("error") or "")[:40],
            style="bold" if t["number"] == best else None,
        )
    return out


def heading(doc: dict[str, Any]) -> str:
    trials = doc.get("trials", [])
    counts = {s: sum(t["state"] == s for t in trials) for s in STATE_STYLE}
    shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    name = f" ({doc['name']})" if doc.get("name") else ""
    count = f"{len(trials)}/{doc.get('max_trials', '?')} trials"
    return f"sweep {doc['id']}{name} {doc['status']}: {count} ({shown or 'none yet'})"


def final_line(doc: dict[str, Any]) -> str:
    """How the sweep ended and its best trial, in one line (what ``gradserve sweeps watch`` ends with)."""
    line = heading(doc)
    best = doc.get("best")
    if best is not None:
        line += f"; best {_metric(doc)} {_g(best['value'])} (trial {best['number']}: {params_text(best['params'])})"
    return line


def watch(sweep: Watched, console: Console | None, poll_s: float) -> dict[str, Any]:

    console = console or Console()
    doc = sweep.refresh()
    if console.is_terminal:
        with Live(Group(table(doc)), console=console, auto_refresh=False) as live:
            while doc["status"] not in SWEEP_TERMINAL:
                time.sleep(poll_s)
                doc = sweep.refresh()
                live.update(Group(table(doc)), refresh=True)
    else:
        seen: dict[int, str] = {}
        while True:
            for t in doc.get("trials", []):
                if seen.get(t["number"]) != t["state"]:
                    seen[t["number"]] = t["state"]
                    value = "" if t.get("value") is None else f" {_metric(doc)} {_g(t['value'])}"
                    line = f"trial {t['number']} {t['state']}{value}  {params_text(t['params'])}"
                    console.print(line, highlight=False, soft_wrap=True)
            if doc["status"] in SWEEP_TERMINAL:
                break
            time.sleep(poll_s)
            doc = sweep.refresh()
    console.print(final_line(doc), highlight=False, soft_wrap=True)
    return doc
