"""Training throughput: a bare PyTorch loop against the same job run through gradserve, in one run.

    .venv/bin/python bench/train_throughput.py [--quick] [--device cpu|cuda]

Starts ``gradserve up`` with one worker (embedded Redis), then for LeNet on ``random`` data with SGD,
for MSE and cross-entropy, at batch 1, 64 and 256: steps/s of the bare loop (hand-written LeNet,
same data, same seeded shuffling) and of the service's job, measured the same way on both sides
(from the end of step 1 to the end of the last step; best of N runs, alternating, to damp noise
from other processes). Then submit-to-first-step latency over 50 small jobs on the warm worker:
the client's clock before POST to the worker's clock at the end of step 1 (same host).
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.session_latency import start_service, stop_service  # noqa: E402
from gradserve.protocol.states import JOB_STOPPED  # noqa: E402
from launcher.tuning import keep_freed_memory  # noqa: E402
from models.spec.network import LENET_EXAMPLE  # noqa: E402

NUM_SAMPLES = 1024
LOSSES = {"mse": "MSELoss", "ce": "CrossEntropyLoss"}


class LeNet(nn.Module):
    """The tutorial's network, hand-written: the baseline side."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 6, 14, 14)
        x = torch.flatten(F.max_pool2d(F.relu(self.conv2(x)), 2), 1)  # (N, 400)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def dataset(loss: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The job's ``random`` dataset, generated as the service documents it."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((NUM_SAMPLES, 1, 32, 32), generator=g)
    y = torch.randint(10, (NUM_SAMPLES,), generator=g) if loss == "ce" else torch.randn((NUM_SAMPLES, 10), generator=g)
    return x.to(device), y.to(device)


def bare_steps_per_s(loss: str, batch: int, steps: int, device: torch.device) -> float:
    x_all, y_all = dataset(loss, device)
    torch.manual_seed(0)
    net = LeNet().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss() if loss == "ce" else nn.MSELoss()
    shuffler, step, t_first = torch.Generator().manual_seed(0), 0, 0.0
    while step < steps:
        for idx in torch.randperm(NUM_SAMPLES, generator=shuffler).to(device).split(batch):
            out = net(x_all[idx])
            criterion(out, y_all[idx]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == 1:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t_first = time.perf_counter()
            if step == steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (steps - 1) / (time.perf_counter() - t_first)


def job(loss: str, batch: int, steps: int, device: str) -> dict:
    target = {"num_classes": 10} if loss == "ce" else {"target_shape": [10]}
    return {
        "network": LENET_EXAMPLE,
        "dataset": {"source": "random", "num_samples": NUM_SAMPLES, "seed": 0, **target},
        "criterion": {"type": LOSSES[loss]},
        "optimizer": {"type": "SGD", "lr": 0.001},
        "batch_size": batch,
        "steps": steps,
        "seed": 0,
        "device": device,
        "capture": {"graph": False},
    }


def wait(client: httpx.Client, job_id: str, poll_s: float) -> dict:
    while True:
        doc = client.get(f"/v1/jobs/{job_id}").json()
        if doc["status"] in JOB_STOPPED:
            if doc["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} ended {doc['status']}: {doc.get('error')}")
            return doc
        time.sleep(poll_s)


def service_steps_per_s(client: httpx.Client, loss: str, batch: int, steps: int, device: str) -> float:
    job_id = client.post("/v1/jobs", json=job(loss, batch, steps, device)).json()["id"]
    wait(client, job_id, 0.25)
    t = client.get(f"/v1/jobs/{job_id}/metrics").json()["t"]  # on a GPU the last one is stamped after a sync
    return (steps - 1) / (t[-1] - t[0])


def first_step_latencies(client: httpx.Client, count: int, device: str) -> list[float]:
    body = job("ce", 1, 1, device)
    body["dataset"]["num_samples"] = 64
    out = []
    for _ in range(count):
        sent = time.time()
        job_id = client.post("/v1/jobs", json=body).json()["id"]
        doc = wait(client, job_id, 0.005)
        out.append((doc["first_step_at"] - sent) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (under 90 s)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    scale, repeats, latency_jobs = (1, 3, 50) if args.quick else (3, 5, 50)
    # About a second of training per measurement: shorter runs are dominated by jitter on a shared box.
    steps_for = {1: 500 * scale, 64: 100 * scale, 256: 25 * scale}
    device = torch.device(args.device)
    keep_freed_memory()  # the bare loop gets the workers' malloc settings: the baseline at its best
    proc, url = start_service()  # one job worker and one session worker: the default layout
    figures: dict[str, float] = {}
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            # The bare loop at the job worker's thread count: the same work, and on a shared box the same
            # contention (at PyTorch's default of one thread per core it spun beside the service's processes).
            (worker,) = [w for w in client.get("/readyz").json()["workers"] if "jobs" in w["lanes"]]
            torch.set_num_threads(worker["threads"])
            print(
                f"torch {torch.__version__}, {torch.get_num_threads()} threads (the job worker's), device {device}, "
                f"{'quick' if args.quick else 'full'} run",
                flush=True,
            )
            service_steps_per_s(client, "ce", 64, 5, args.device)  # warm the worker (imports, caches)
            bare_steps_per_s("ce", 64, 5, device)
            ratios: dict[int, list[float]] = {}
            for batch, steps in steps_for.items():
                for loss in LOSSES:
                    bare = svc = 0.0
                    for _ in range(repeats):
                        bare = max(bare, bare_steps_per_s(loss, batch, steps, device))
                        svc = max(svc, service_steps_per_s(client, loss, batch, steps, args.device))
                    ratios.setdefault(batch, []).append(svc / bare)
                    print(
                        f"batch {batch:>3} {loss:>3}: bare {bare:8.1f} steps/s, service {svc:8.1f} steps/s, "
                        f"ratio {svc / bare:.3f}",
                        flush=True,
                    )
            for batch, values in ratios.items():
                figures[f"ratio_b{batch}"] = round(min(values), 3)
            latencies = first_step_latencies(client, latency_jobs, args.device)
            figures["submit_to_first_step_p50_ms"] = round(statistics.median(latencies), 1)
            figures["submit_to_first_step_p90_ms"] = round(statistics.quantiles(latencies, n=10)[-1], 1)
            print(
                f"submit to first step over {latency_jobs} jobs: p50 {figures['submit_to_first_step_p50_ms']} ms, "
                f"p90 {figures['submit_to_first_step_p90_ms']} ms",
                flush=True,
            )
    finally:
        stop_service(proc)
    figures["device"] = args.device
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
