"""Latency of a session ``forward`` on LeNet (batch 1) over HTTP -> API -> Celery -> worker -> back,
against the bare PyTorch forward, measured in the same run; then a real batch of 256 sent as
safetensors against the same call with a ``randn`` generator input (``binary_b256_ratio``), and
batch-1 forwards while a training job runs on the job worker (``p99_during_job_ms``).

    python bench/session_latency.py            # 2000 calls
    python bench/session_latency.py --quick    # 500 calls, well under a minute
    python bench/session_latency.py --url http://127.0.0.1:8000   # against a running service

Starts ``gradserve up`` (embedded Redis, single-user, loopback; its default layout of 1 job worker
and 1 session worker, ``--workers N --session-workers M``) unless ``--url`` is given. Also times
``GET /healthz`` (the HTTP + FastAPI floor), and reads each reply's Server-Timing, so the rest can be
put down to the API, the queue hop and the worker. The last line printed is one JSON object.
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

from gradserve.protocol.codec import OCTET, pack_call  # noqa: E402
from launcher.spawn import spawn_up  # noqa: E402
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


def start_service(workers: int = 1, session_workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    """``gradserve up`` in single-user mode on its own embedded Redis, in a fresh temporary folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "GRADSERVE_API_KEYS")}
    up = spawn_up(
        Path(tempfile.mkdtemp(prefix="gradserve-bench-")), workers=workers, session_workers=session_workers, env=env
    )
    return up.proc, up.url


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as Ctrl-C would stop ``gradserve up``; a kill if it has not stopped in 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def batch_256(client: httpx.Client, sid: str, n: int) -> dict[str, list[float]]:
    """A real [256, 1, 32, 32] input as a safetensors body, against the same call with a generator input."""
    x = torch.randn(256, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    binary = pack_call({"input": x})
    generator = json.dumps({"input": {"randn": [256, 1, 32, 32], "seed": 1}}).encode()
    both = {
        "binary": ({"Content-Type": OCTET, "Accept": OCTET}, binary),
        "generator": ({"Content-Type": "application/json", "Accept": OCTET}, generator),
    }
    out: dict[str, list[float]] = {"binary": [], "generator": []}
    for _ in range(n):  # alternating, so both see the same noise
        for name, (headers, content) in both.items():
            t0 = time.perf_counter()
            client.post(f"/v1/sessions/{sid}/forward", content=content, headers=headers).raise_for_status()
            out[name].append(time.perf_counter() - t0)
    return out


def during_job(client: httpx.Client, sid: str, body: bytes, n: int) -> list[float]:
    """Batch-1 forwards while a LeNet job trains at batch 64 on the job worker (cancelled after)."""
    job = {
        "network": LENET_EXAMPLE,
        "dataset": {"source": "random", "num_samples": 1024, "num_classes": 10, "seed": 0},
        "criterion": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.01},
        "batch_size": 64,
        "steps": 1_000_000,
        "seed": 0,
        "device": "cpu",
    }
    job_id = client.post("/v1/jobs", json=job).json()["id"]
    try:
        while client.get(f"/v1/jobs/{job_id}").json()["step"] < 5:
            time.sleep(0.05)
        headers = {"Content-Type": "application/json"}
        return timed(lambda: client.post(f"/v1/sessions/{sid}/forward", content=body, headers=headers), n)
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 calls")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="job worker processes (gradserve up's default: 1)")
    parser.add_argument("--session-workers", type=int, default=1, help="session worker processes (default: 1)")
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
        proc, url = start_service(args.workers, args.session_workers)
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
            last = client.post(f"/v1/sessions/{sid}/forward", content=body, headers=json_headers)
            threads = int(last.json()["threads"])
            b256 = batch_256(client, sid, max(20, n // 25))
            during = during_job(client, sid, body, max(100, n // 4))
            client.delete(f"/v1/sessions/{sid}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)

    print(f"forward batch 256, safetensors body and answer: {ms(b256['binary'])}")
    print(f"forward batch 256, randn generator input, safetensors answer: {ms(b256['generator'])}")
    print(f"forward batch 1 while a job trains on the job worker: {ms(during)}")
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
        "binary_b256_ratio": round(pct(b256["binary"], 50) / pct(b256["generator"], 50), 3),
        "binary_b256_p50_ms": ms(b256["binary"])["p50_ms"],
        "generator_b256_p50_ms": ms(b256["generator"])["p50_ms"],
        "p50_during_job_ms": ms(during)["p50_ms"],
        "p99_during_job_ms": ms(during)["p99_ms"],
        "calls": n,
        "workers": args.workers,
        "session_workers": args.session_workers,
        "threads": torch.get_num_threads(),
        "session_threads": threads,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
