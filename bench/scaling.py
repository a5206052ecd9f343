"""How the service keeps up as the work grows: wider networks, bigger batches, mixed precision.

    .venv/bin/python bench/scaling.py [--quick] [--device cpu|cuda] [--precision 32 bf16-mixed ...]
    .venv/bin/python bench/scaling.py --processes 1 2 [--quick]

A CIFAR-shaped convolutional network (3 stages of two 3x3 convolutions with batch norm, then a linear
head; channels ``width``, ``2 width``, ``4 width``) from the catalogue, trained on ``random`` data
with SGD and momentum, at several widths and batch sizes and in each precision: samples/s of a bare
PyTorch loop (the same network, built by the same code; the same data; the same autocast) and of the
service's job, measured the same way on both sides (from the end of step 1 to the end of the last
step, best of N, alternating). It prints each row's ratio, and each precision's speed-up over fp32
on both sides. The last line printed is one JSON object with the figures.

With ``--processes``, it measures data-parallel jobs instead (CPU, gloo): samples/s of the job at each
number of processes (``resources.processes_per_node``) against the bare DDP loop spawned with
torch.multiprocessing at as many ranks, each rank at the job's thread count, the global batch split
evenly; and the efficiency, samples/s at P processes over P times those at 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.session_latency import start_service, stop_service  # noqa: E402
from gradserve.protocol.states import JOB_STOPPED  # noqa: E402
from launcher.tuning import keep_freed_memory  # noqa: E402
from models.nn.build import build_network  # noqa: E402
from models.spec.network import NetworkSpec  # noqa: E402

NUM_SAMPLES = 2048
DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def convnet(width: int) -> dict[str, Any]:
    layers: list[dict[str, Any]] = []
    channels = 3
    for stage, out in enumerate((width, 2 * width, 4 * width), start=1):
        for i in (1, 2):
            conv = {"name": f"s{stage}_conv{i}", "type": "Conv2d", "kernel_size": 3, "padding": 1}
            layers += [
                {**conv, "in_channels": channels, "out_channels": out, "bias": False},
                {"name": f"s{stage}_bn{i}", "type": "BatchNorm2d", "num_features": out},
                {"type": "relu"},
            ]
            channels = out
        layers.append({"type": "max_pool2d", "kernel_size": 2})
    layers += [
        {"type": "flatten", "start_dim": 1},
        {"name": "head", "type": "Linear", "in_features": channels * 4 * 4, "out_features": 10},
    ]
    return {"name": f"ConvNet{width}", "input_shape": [3, 32, 32], "layers": layers}


def bare_samples_per_s(width: int, batch: int, steps: int, precision: str, device: torch.device) -> float:
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn((NUM_SAMPLES, 3, 32, 32), generator=g).to(device)
    y_all = torch.randint(10, (NUM_SAMPLES,), generator=g).to(device)
    torch.manual_seed(0)
    net = build_network(NetworkSpec.model_validate(convnet(width))).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    dtype = DTYPES.get(precision)
    shuffler, step, t_first = torch.Generator().manual_seed(0), 0, 0.0
    while step < steps:
        for idx in torch.randperm(NUM_SAMPLES, generator=shuffler).to(device).split(batch):
            autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
            with autocast:
                loss = criterion(net(x_all[idx]), y_all[idx])
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
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
    return (steps - 1) * batch / (time.perf_counter() - t_first)


def _bare_rank(rank: int, world: int, port: int, threads: int, width: int, batch: int, steps: int, out: str) -> None:
    """One rank of the bare DDP loop; rank 0 writes the samples/s of all of them to ``out``."""
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    x_all = torch.randn((NUM_SAMPLES, 3, 32, 32), generator=g)
    y_all = torch.randint(10, (NUM_SAMPLES,), generator=g)
    torch.manual_seed(0)
    net = build_network(NetworkSpec.model_validate(convnet(width)))
    ddp = DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    shuffler, step, t_first = torch.Generator().manual_seed(0), 0, 0.0
    while step < steps:
        for idx in torch.randperm(NUM_SAMPLES, generator=shuffler).split(batch):
            mine = idx[rank::world]  # this rank's share of the global batch
            loss = nn.functional.cross_entropy(ddp(x_all[mine]), y_all[mine])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == 1:
                t_first = time.perf_counter()
            if step == steps:
                break
    elapsed = time.perf_counter() - t_first
    dist.destroy_process_group()
    if rank == 0:
        Path(out).write_text(json.dumps((steps - 1) * batch / elapsed))


def bare_ddp_samples_per_s(width: int, batch: int, steps: int, world: int, threads: int) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder, "rate.json"))
        mp.spawn(_bare_rank, args=(world, port, threads, width, batch, steps, out), nprocs=world)
        return float(json.loads(Path(out).read_text()))


def job(width: int, batch: int, steps: int, precision: str, device: str) -> dict[str, Any]:
    return {
        "network": convnet(width),
        "dataset": {"source": "random", "num_samples": NUM_SAMPLES, "seed": 0, "num_classes": 10},
        "criterion": {"type": "CrossEntropyLoss"},
        "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9},
        "batch_size": batch,
        "steps": steps,
        "seed": 0,
        "device": device,
        "precision": precision,
        "capture": {"graph": False},
    }


def service_samples_per_s(
    client: httpx.Client, width: int, batch: int, steps: int, precision: str, device: str, processes: int = 1
) -> float:
    return service_run(client, width, batch, steps, precision, device, processes)[0]


def service_run(
    client: httpx.Client, width: int, batch: int, steps: int, precision: str, device: str, processes: int = 1
) -> tuple[float, int]:
    """The job's samples/s, and the threads each of its processes computed with."""
    body = {**job(width, batch, steps, precision, device), "resources": {"processes_per_node": processes}}
    response = client.post("/v1/jobs", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"width {width} batch {batch} {precision}: {response.status_code} {response.text}")
    job_id = response.json()["id"]
    while (doc := client.get(f"/v1/jobs/{job_id}").json())["status"] not in JOB_STOPPED:
        time.sleep(0.1)
    if doc["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {doc['status']}: {doc.get('error')}")
    t = client.get(f"/v1/jobs/{job_id}/metrics").json()["t"]
    return (steps - 1) * batch / (t[-1] - t[0]), int(doc["threads"])


def processes_main(counts: list[int], quick: bool) -> None:
    """Data-parallel jobs at each count of processes against the bare DDP loop at as many ranks."""
    width, batch, steps, repeats = 8, 64, 20 if quick else 40, 2 if quick else 3
    print(f"torch {torch.__version__}, cpu (gloo), width {width}, global batch {batch}", flush=True)
    proc, url = start_service()
    rows: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            service_run(client, width, batch, 5, "32", "cpu", max(counts))  # warm: imports, the agent
            for world in counts:
                bare = svc = 0.0
                for _ in range(repeats):
                    rate, threads = service_run(client, width, batch, steps, "32", "cpu", world)
                    svc = max(svc, rate)
                    bare = max(bare, bare_ddp_samples_per_s(width, batch, steps, world, threads))
                rows.append({"processes": world, "threads_per_rank": threads, "bare": bare, "service": svc})
                print(
                    f"{world} processes ({threads} threads each): bare DDP {bare:8.0f} samples/s, "
                    f"service {svc:8.0f} samples/s, ratio {svc / bare:.3f}",
                    flush=True,
                )
    finally:
        stop_service(proc)
    one = rows[0]
    for row in rows:
        for side in ("bare", "service"):
            row[f"efficiency_{side}"] = round(row[side] / (row["processes"] * one[side]), 3)
        row["ratio"] = round(row["service"] / row["bare"], 3)
        row["bare"], row["service"] = round(row["bare"]), round(row["service"])
    print(json.dumps({"device": "cpu", "rows": rows}))


def _same_size(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["width"] == b["width"] and a["batch"] == b["batch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", nargs="+", default=["32", "bf16-mixed"], choices=["32", *DTYPES])
    parser.add_argument("--processes", nargs="+", type=int, help="data-parallel jobs at these counts, e.g. 1 2")
    args = parser.parse_args()
    if args.processes:
        processes_main(sorted(args.processes), args.quick)
        return
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    widths = ([32, 128] if args.quick else [32, 64, 128, 256]) if on_gpu else ([8, 16] if args.quick else [8, 16, 32])
    batches = [128, 512] if on_gpu else [32]
    repeats = 2 if args.quick else 3
    steps = 80 if on_gpu else 12
    keep_freed_memory()
    name = torch.cuda.get_device_name() if on_gpu else "cpu"
    print(f"torch {torch.__version__}, device {name}, {torch.get_num_threads()} threads", flush=True)
    # The widest network at the biggest batch needs more than the default 2 GiB activation estimate.
    os.environ.setdefault("GRADSERVE_MAX_ACTIVATION_BYTES", str(64 * 2**30 if on_gpu else 8 * 2**30))
    proc, url = start_service()
    rows: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            for precision in args.precision:  # warm both sides: imports, kernels, autotuning caches
                service_samples_per_s(client, widths[0], batches[0], 5, precision, args.device)
                bare_samples_per_s(widths[0], batches[0], 5, precision, device)
            for width in widths:
                for batch in batches:
                    for precision in args.precision:
                        bare = svc = 0.0
                        for _ in range(repeats):
                            bare = max(bare, bare_samples_per_s(width, batch, steps, precision, device))
                            svc = max(svc, service_samples_per_s(client, width, batch, steps, precision, args.device))
                        row = {"width": width, "batch": batch, "precision": precision, "bare": bare, "service": svc}
                        rows.append(row)
                        print(
                            f"width {width:>3} batch {batch:>4} {precision:>10}: bare {bare:10.0f} samples/s, "
                            f"service {svc:10.0f} samples/s, ratio {svc / bare:.3f}",
                            flush=True,
                        )
    finally:
        stop_service(proc)
    figures: dict[str, Any] = {"device": name, "ratio_min": round(min(r["service"] / r["bare"] for r in rows), 3)}
    figures["ratio_median"] = round(sorted(r["service"] / r["bare"] for r in rows)[len(rows) // 2], 3)
    for precision in args.precision:
        if precision == "32" or "32" not in args.precision:
            continue
        for side in ("bare", "service"):
            speedups = [
                r[side] / next(f[side] for f in rows if f["precision"] == "32" and _same_size(f, r))
                for r in rows
                if r["precision"] == precision
            ]
            figures[f"{precision}_speedup_{side}_max"] = round(max(speedups), 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
