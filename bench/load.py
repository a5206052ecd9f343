"""Load: N concurrent clients, each driving its own session with LeNet ``forward`` calls (batch 1), while
one more client trains small jobs back to back; throughput, latency and every answer's status.

    python bench/load.py                       # 32 then 200 clients, 15 s each, `gradserve up` defaults
    python bench/load.py --quick               # 5 s each
    python bench/load.py --clients 8,32 --workers 2 --seconds 10
    python bench/load.py --url http://127.0.0.1:8000 --key KEY   # against a running service

Starts ``gradserve up`` (embedded Redis, single-user, loopback) unless ``--url`` is given, and times
the bare PyTorch forward in the same run. Meanwhile ``--idlers`` connections each send a request every
4.8-5.2 s, around the 5 s that uvicorn kept an idle connection by default: a request crossing the
server's close got no answer (one in ~2,700 at 200 clients). The last line printed is one JSON object:
``calls_per_s_<N>``, ``p50_ms_<N>``, ``p99_ms_<N>``, ``errors_5xx_<N>``, ``errors_<N>`` (answers by
status, 2xx left out) and ``transport_errors_<N>`` (requests that got no answer: connections closed
under them, even when resent) for each N, plus ``jobs_succeeded`` and the bare forward's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.raw_http import Dropped, KeepAlive  # noqa: E402
from bench.session_latency import bare_forward, pct, start_service  # noqa: E402
from gradserve.protocol.states import JOB_STOPPED  # noqa: E402
from models.spec.network import LENET_EXAMPLE  # noqa: E402
from tests.integration.jobs_helpers import MLP  # noqa: E402  (the test suite's small network)

JSON = "application/json"
SAMPLES: dict[int, str] = {}  # the first answer of each error status, printed to say what went wrong
JOB = {
    "network": MLP,
    "dataset": {"source": "random", "num_samples": 64, "seed": 1},
    "criterion": {"type": "MSELoss"},
    "optimizer": {"type": "SGD", "lr": 0.05},
    "batch_size": 8,
    "steps": 50,
    "seed": 0,
}


async def make_session(client: httpx.AsyncClient, codes: Counter) -> str | None:
    made = await client.post("/v1/sessions", json={"network": LENET_EXAMPLE, "seed": 0, "device": "cpu"})
    codes[made.status_code] += 1
    if made.status_code != 201:
        SAMPLES.setdefault(made.status_code, made.text[:300])
        return None
    return made.json()["id"]


async def forwards(conn: KeepAlive, sid: str, body: bytes, until: float, lat: list[float], codes: Counter) -> None:
    try:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            try:
                status, headers, answer = await conn.request("POST", f"/v1/sessions/{sid}/forward", body, JSON)
            except (Dropped, OSError) as exc:
                codes[type(exc).__name__] += 1
                continue
            codes[status] += 1
            if status >= 300 and status not in SAMPLES:
                SAMPLES[status] = answer[:300].decode(errors="replace")
            if status == 200:
                lat.append(time.perf_counter() - t0)
            elif status in (429, 503):  # back-pressure: wait as told
                await asyncio.sleep(float(headers.get("retry-after", "1")))
    finally:
        await conn.close()


async def idle_gaps(conn: KeepAlive, until: float, codes: Counter, seed: int) -> None:
    """A request every 4.8-5.2 s on one kept connection, across the old keep-alive boundary."""
    rng = random.Random(seed)
    try:
        while time.monotonic() < until:
            try:
                status, _, _ = await conn.request("GET", "/healthz", b"", JSON)
                codes[status] += 1
            except (Dropped, OSError) as exc:
                codes[type(exc).__name__] += 1
            await asyncio.sleep(rng.uniform(4.8, 5.2))
    finally:
        await conn.close()


async def jobs_loop(client: httpx.AsyncClient, until: float, codes: Counter, done: Counter) -> None:
    while time.monotonic() < until:
        r = await client.post("/v1/jobs", json=JOB)
        codes[r.status_code] += 1
        if r.status_code != 202:
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            continue
        job_id = r.json()["id"]
        while True:
            doc = (await client.get(f"/v1/jobs/{job_id}")).json()
            if doc.get("status") in JOB_STOPPED:
                done[doc["status"]] += 1
                break
            await asyncio.sleep(0.1)


async def run(
    url: str, headers: dict[str, str], clients: int, seconds: float, body: bytes, idlers: int
) -> dict[str, object]:
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        codes: Counter = Counter()
        done: Counter = Counter()
        t_made = time.monotonic()
        sids = [s for s in await asyncio.gather(*(make_session(client, codes) for _ in range(clients))) if s]
        print(f"{len(sids)} of {clients} sessions made in {time.monotonic() - t_made:.1f} s", flush=True)
        lat: list[float] = []
        t0 = time.monotonic()
        until = t0 + seconds
        # The calls measured go over lean keep-alive connections (bench/raw_http.py): httpx's own CPU per
        # request would be the bottleneck on a 2-core box. Sessions and jobs keep using httpx.
        conns = [KeepAlive(url, headers) for _ in range(len(sids) + idlers)]
        work = [forwards(conn, sid, body, until, lat, codes) for conn, sid in zip(conns, sids, strict=False)]
        work += [idle_gaps(conn, until, codes, seed) for seed, conn in enumerate(conns[len(sids) :])]
        await asyncio.gather(*work, jobs_loop(client, until, codes, done))
        elapsed = time.monotonic() - t0
        # After the run's idle stretch, on the pool's kept connections: a dropped one is a transport error.
        for answer in await asyncio.gather(
            *(client.delete(f"/v1/sessions/{sid}") for sid in sids), return_exceptions=True
        ):
            codes[answer.status_code if isinstance(answer, httpx.Response) else type(answer).__name__] += 1
    errors = {str(k): v for k, v in sorted(codes.items(), key=str) if not (isinstance(k, int) and k < 300)}
    transport = sum(v for k, v in codes.items() if not isinstance(k, int)) + sum(c.dropped for c in conns)
    return {
        "calls_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(pct(lat, 50) * 1e3, 1) if lat else None,
        "p99_ms": round(pct(lat, 99) * 1e3, 1) if lat else None,
        "errors_5xx": sum(v for k, v in codes.items() if not isinstance(k, int) or k >= 500),
        "errors": errors,
        "transport_errors": transport,
        "jobs_succeeded": done["succeeded"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="32,200", help="comma-separated client counts (default 32,200)")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--quick", action="store_true", help="5 s per client count")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (gradserve up's default: 1)")
    parser.add_argument("--url", default=None, help="a running service (single-user, or set --key)")
    parser.add_argument("--key", default=None, help="API key for --url")
    parser.add_argument("--idlers", type=int, default=32, help="connections sending every ~5 s (default 32)")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds

    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    bare = bare_forward(x, 500)
    bare_per_s = 1 / pct(bare, 50)
    print(f"bare LeNet forward (batch 1, {torch.get_num_threads()} threads): {bare_per_s:,.0f}/s", flush=True)
    body = json.dumps({"input": x.tolist()}).encode()

    counts = [int(c) for c in args.clients.split(",")]
    # Every client holds its own session, all in one tenant: the service it starts allows that many.
    os.environ.setdefault("GRADSERVE_MAX_SESSIONS", str(2 * max(counts)))
    proc, url = (None, args.url) if args.url else start_service(args.workers)
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    result: dict[str, object] = {"workers": args.workers, "seconds": seconds, "bare_forward_per_s": round(bare_per_s)}
    try:
        for n in counts:
            got = asyncio.run(run(url, headers, n, seconds, body, args.idlers))
            print(f"{n} clients: {got}", flush=True)
            for code, text in sorted(SAMPLES.items()):
                print(f"  first {code}: {text}", flush=True)
            SAMPLES.clear()
            for name, value in got.items():
                result[f"{name}_{n}"] = value
            result[f"service_vs_bare_{n}"] = round(float(got["calls_per_s"]) / bare_per_s, 3)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    transport = sum(int(v) for k, v in result.items() if k.startswith("transport_errors_"))
    print(f"transport errors (requests that got no answer): {transport}", flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
