"""Latency of a session ``forward`` on LeNet (batch 1) over HTTP -> API -> Celery -> worker -> back,
against the bare PyTorch forward, measured in the same run.

    python bench/session_latency.py            # 2000 calls
    python bench/session_latency.py --quick    # 500 calls, well under a minute
    python bench/session_latency.py --url http://127.0.0.1:8000   # against a running service

Starts ``gradserve up`` (embedded Redis, single-user, loopback; 1 worker like its default,
``--workers N``) unless ``--url`` is given. Also times ``GET /healthz`` (the HTTP + FastAPI floor),
and reads each reply's Server-Timing, so the rest can be put down to the API, the queue hop and the
worker. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.embedded_redis import free_port  # noqa: E402
from models.nn.build import build_network  # noqa: E402
from models.spec.network import LENET_EXAMPLE, NetworkSpec  # noqa: E402


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def ms(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(samples, 50) * 1e3, 3),
        "p99_ms": round(pct(samples, 99) * 1e3, 3),
        "mean_ms": round(statistics.fmean(samples) * 1e3, 3),
    }


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bare_forward(x: torch.Tensor, n: int) -> list[float]:
    torch.manual_seed(0)
    net = build_network(NetworkSpec.model_validate(LENET_EXAMPLE))
    timed(lambda: net(x), 50)
    return timed(lambda: net(x), n)


def start_service(workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="gradserve-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "GRADSERVE_API_KEYS")}
    log = (data / "up.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher",
            "up",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--data-dir",
            str(data),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    while "ready at" not in (data / "up.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"gradserve up did not start:\n{(data / 'up.log').read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 calls")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (gradserve up's default: 1)")
    parser.add_argument("--url", default=None, help="a running service (single-user, or set --key)")
    parser.add_argument("--key", default=None, help="API key for --url")
    args = parser.parse_args()
    n = args.calls or (500 if args.quick else 2000)

    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    bare = bare_forward(x, n)
    print(f"bare LeNet forward (batch 1, {torch.get_num_threads()} threads): {ms(bare)}", flush=True)

    proc = None
    url = args.url
    if url is None:
        proc, url = start_service(args.workers)
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            sid = client.post("/v1/sessions", json={"network": LENET_EXAMPLE, "seed": 0, "device": "cpu"}).json()["id"]
            # Encoded once: the client's own JSON encoding is not the service's latency.
            body = json.dumps({"input": x.tolist()}).encode()
            json_headers = {"Content-Type": "application/json"}

            parts: dict[str, list[float]] = {"worker": [], "call": []}

            def forward() -> None:
                r = client.post(f"/v1/sessions/{sid}/forward", content=body, headers=json_headers)
                r.raise_for_status()
                for item in r.headers["server-timing"].split(","):
                    name, _, dur = item.strip().partition(";dur=")
                    parts[name].append(float(dur) / 1e3)

            timed(forward, 50)  # warm: connections, caches on every worker
            floor = timed(lambda: client.get("/healthz").raise_for_status(), min(n, 500))
            parts = {"worker": [], "call": []}
            http = timed(forward, n)
            client.delete(f"/v1/sessions/{sid}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)

    print(f"GET /healthz (HTTP + FastAPI floor): {ms(floor)}")
    print(f"POST forward over HTTP -> Celery -> worker ({n} calls, {args.workers} workers): {ms(http)}")
    print(f"  of which API enqueue -> reply (Server-Timing call): {ms(parts['call'])}")
    print(f"  of which the worker's handler (Server-Timing worker): {ms(parts['worker'])}")
    print("  so: HTTP + API ~ total - call; Celery hop ~ call - worker")
    result = {
        **ms(http),
        "bare_forward_ms": ms(bare)["p50_ms"],
        "healthz_p50_ms": ms(floor)["p50_ms"],
        "call_p50_ms": ms(parts["call"])["p50_ms"],
        "worker_p50_ms": ms(parts["worker"])["p50_ms"],
        "calls": n,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
