"""What one client's oversized JSON costs everyone else: /healthz latency and the API's memory while it lands.

    .venv/bin/python bench/one_client.py [--layers 1500000]

Starts ``gradserve up`` (API keys on, embedded Redis), then sends a network spec of ``--layers`` layers
(27 MB of JSON at 1.5 million) three ways: to ``POST /v1/networks`` without an API key, with one, and
inside a ``POST /v1/jobs``. Meanwhile a thread asks ``/healthz`` every 10 ms. For each: the answer's status,
its time, the slowest /healthz seen meanwhile and the API process's peak resident memory. The last line
printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Service, start_service, stop_service  # noqa: E402
from tests.integration.jobs_helpers import mlp_job  # noqa: E402


def _api_process(service: Service) -> psutil.Process:
    """The uvicorn child of ``gradserve up`` (``launcher api``)."""
    for child in psutil.Process(service.proc.pid).children(recursive=True):
        if "api" in child.cmdline() and "launcher" in " ".join(child.cmdline()):
            return child
    raise RuntimeError("no API process under gradserve up")


def _watch(service: Service, api: psutil.Process, stop: threading.Event, seen: dict[str, float]) -> None:
    with httpx.Client(base_url=service.url, timeout=120) as c:
        while not stop.is_set():
            started = time.perf_counter()
            c.get("/healthz")
            seen["healthz_max_ms"] = max(seen["healthz_max_ms"], (time.perf_counter() - started) * 1000)
            seen["api_peak_mb"] = max(seen["api_peak_mb"], api.memory_info().rss / 2**20)
            time.sleep(0.01)


def measure(service: Service, api: psutil.Process, name: str, send: Any) -> dict[str, Any]:
    seen = {"healthz_max_ms": 0.0, "api_peak_mb": api.memory_info().rss / 2**20}
    before = seen["api_peak_mb"]
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(service, api, stop, seen))
    watcher.start()
    time.sleep(0.2)
    started = time.perf_counter()
    response = send()
    took = time.perf_counter() - started
    time.sleep(0.2)
    stop.set()
    watcher.join()
    out = {
        "case": name,
        "status": response.status_code,
        "answer_s": round(took, 3),
        "healthz_max_ms": round(seen["healthz_max_ms"], 1),
        "api_rss_before_mb": round(before),
        "api_rss_peak_mb": round(seen["api_peak_mb"]),
        "api_rss_after_mb": round(api.memory_info().rss / 2**20),
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1_500_000)
    args = parser.parse_args()
    network = {"input_shape": [6], "layers": [{"type": "relu"}] * args.layers}
    body = json.dumps(network).encode()
    job = json.dumps(mlp_job(network=network)).encode()
    json_type = {"content-type": "application/json"}
    with tempfile.TemporaryDirectory() as tmp:
        service = start_service(Path(tmp), workers=1, session_workers=1)
        try:
            api = _api_process(service)
            with httpx.Client(base_url=service.url, timeout=600) as anon, service.client() as alice:
                cases = [
                    ("no key", anon, "/v1/networks", body),
                    ("network", alice, "/v1/networks", body),
                    ("job", alice, "/v1/jobs", job),
                ]
                rows = [
                    measure(
                        service,
                        api,
                        name,
                        lambda c=c, path=path, blob=blob: c.post(path, content=blob, headers=json_type),
                    )
                    for name, c, path, blob in cases
                ]
        finally:
            stop_service(service)
    print(json.dumps({"layers": args.layers, "body_mb": round(len(body) / 2**20, 1), "cases": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
