"""The dashboard's compare view with many long runs: server-side downsampling against drawing every point.

    .venv/bin/python bench/ui_compare.py [--quick] [--runs 20] [--steps 10000]

Starts ``gradserve up`` (two workers, embedded Redis), trains ``--runs`` small MLP jobs of ``--steps`` steps
each, then in headless Chromium (Debian's package, as the tests use it) opens the compare view of all of them
twice: as the dashboard does it (each series downsampled by the server) and with every point
(``points=100000``, the baseline). For each: the time from navigation until the chart holds its data, the
bytes of JSON fetched, and one redraw of the chart (the cost of every frame while hovering or resizing;
below ~16 ms is smooth at 60 frames/s). The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Service, start_service, stop_service  # noqa: E402
from tests.integration.jobs_helpers import mlp_job, submit, wait_final  # noqa: E402
from tests.integration.test_ui_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

REDRAWS = 10
MEASURE_REDRAW = """n => {
  const chart = [...Chart.live][0];
  const started = performance.now();
  for (let i = 0; i < n; i++) chart.plot.batch(() => chart.plot.setData(chart.data));
  return (performance.now() - started) / n;
}"""


def train(service: Service, runs: int, steps: int) -> list[str]:
    with service.client("alice") as c:
        sgd = {"type": "SGD", "lr": 0.01}  # no momentum: steady over long runs of this small regression
        ids = [submit(c, mlp_job(steps=steps, seed=seed, optimizer=sgd)) for seed in range(runs)]
        for job_id in ids:
            doc = wait_final(c, job_id, timeout=1800)
            assert doc["status"] == "succeeded", doc
    return ids


def open_compare(browser: Any, service: Service, ids: list[str], points: int | None) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(300_000)
    fetched = [0]
    page.on("response", lambda r: fetched.__setitem__(0, fetched[0] + len(r.body())) if "/series" in r.url else None)
    page.goto(f"{service.url}/ui/#/jobs")
    page.fill("#key-input", service.keys["alice"])
    page.click("#key-save")
    page.wait_for_selector("#jobs-body tr")
    started = time.perf_counter()
    extra = f"&points={points}" if points else ""
    page.evaluate("h => { location.hash = h; }", f"#/compare?ids={','.join(ids)}{extra}")
    page.wait_for_function("() => Number(document.querySelector('#compare-loss')?.dataset.points) > 0")
    load_s = time.perf_counter() - started
    drawn = int(page.get_attribute("#compare-loss", "data-points") or 0)
    redraw_ms = statistics.median(page.evaluate(MEASURE_REDRAW, REDRAWS) for _ in range(3))
    context.close()
    return {"load_s": round(load_s, 3), "points": drawn, "json_bytes": fetched[0], "redraw_ms": round(redraw_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 steps per run instead of 10,000")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10_000)
    args = parser.parse_args()
    steps = 2_000 if args.quick else args.steps
    from playwright.sync_api import sync_playwright

    service = start_service(
        Path(tempfile.mkdtemp(prefix="gradserve-bench-")), extra_env={"GRADSERVE_MAX_CONCURRENT_JOBS": "1000"}
    )
    try:
        t0 = time.perf_counter()
        ids = train(service, args.runs, steps)
        print(f"trained {args.runs} runs of {steps} steps in {time.perf_counter() - t0:.1f} s", flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            open_compare(browser, service, ids, None)  # warm the caches on both sides
            down = open_compare(browser, service, ids, None)
            full = open_compare(browser, service, ids, 100_000)
            browser.close()
    finally:
        stop_service(service)
    print(f"downsampled: {down}", flush=True)
    print(f"every point: {full}", flush=True)
    result = {
        "runs": args.runs,
        "steps": steps,
        "downsampled": down,
        "every_point": full,
        "load_ratio": round(full["load_s"] / down["load_s"], 2),
        "redraw_ratio": round(full["redraw_ms"] / max(down["redraw_ms"], 1e-3), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
