"""Exported networks against their baselines, in one run.

    .venv/bin/python bench/exported_models.py [--quick]

1. A session step (zero_grad, forward, loss, backward, optimizer step: five calls) of the tutorial's LeNet
   sent as an exported program, against the same LeNet as a catalogue spec, on one service; batch 1;
   median over alternating rounds. Target: exported / catalogue <= 1.05.
2. Job steps/s of a ResNet-style network (nested BasicBlocks, BatchNorm, a reused ReLU) sent as an exported
   program, against the bare local loop over the same data (best of N, alternating). Target: >= 0.9.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gradserve  # noqa: E402
from bench.session_latency import start_service, stop_service  # noqa: E402
from bench.train_throughput import LeNet  # noqa: E402
from launcher.tuning import keep_freed_memory  # noqa: E402

SAMPLES, BATCH = 512, 32


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(Block(16, 16, 1), Block(16, 16, 1))
        self.layer2 = nn.Sequential(Block(16, 32, 2), Block(32, 32, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


def session_step_ms(client: gradserve.Client, rounds: int) -> dict[str, float]:
    torch.manual_seed(0)
    x, target = torch.randn(1, 1, 32, 32), torch.randn(1, 10)
    nets = {
        "catalogue": client.remote(LeNet(), torch.optim.SGD, lr=0.01),
        "exported": client.remote(LeNet(), torch.optim.SGD, lr=0.01, format="export"),
    }
    times: dict[str, list[float]] = {name: [] for name in nets}
    for i in range(rounds + 3):
        for name, rnet in nets.items():
            t0 = time.perf_counter()
            rnet.zero_grad()
            nn.functional.mse_loss(rnet(x), target).backward()
            rnet.step()
            if i >= 3:  # the first rounds create the sessions and warm the worker
                times[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(SAMPLES, 3, 16, 16, generator=g), torch.randint(0, 10, (SAMPLES,), generator=g)


def bare_steps_per_s(steps: int) -> float:
    x_all, y_all = data()
    torch.manual_seed(0)
    net = ResNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    shuffler, step, t_first = torch.Generator().manual_seed(0), 0, 0.0
    while step < steps:
        for idx in torch.randperm(SAMPLES, generator=shuffler).split(BATCH):
            criterion(net(x_all[idx]), y_all[idx]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == 1:
                t_first = time.perf_counter()
            if step == steps:
                break
    return (steps - 1) / (time.perf_counter() - t_first)


def job_steps_per_s(client: gradserve.Client, dataset: gradserve.jobs.Dataset, steps: int) -> float:
    torch.manual_seed(0)
    job = client.jobs.submit(
        ResNet(),
        dataset,
        nn.CrossEntropyLoss(),
        torch.optim.SGD,
        lr=0.01,
        batch_size=BATCH,
        steps=steps,
        capture={"graph": False},
    )
    final = job.wait(timeout=600)
    if final["status"] != "succeeded":
        raise RuntimeError(f"job {job.id} ended {final['status']}: {final.get('error')}")
    t = client.request("GET", f"/v1/jobs/{job.id}/metrics").json()["t"]
    return (steps - 1) / (t[-1] - t[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and steps")
    args = parser.parse_args()
    rounds, steps, repeats = (20, 40, 2) if args.quick else (60, 120, 3)
    keep_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    proc, url = start_service()
    figures: dict[str, float] = {}
    try:
        with gradserve.Client(url, timeout=600) as client:
            ms = session_step_ms(client, rounds)
            figures.update({f"session_step_ms_{k}": round(v, 2) for k, v in ms.items()})
            figures["session_step_ratio"] = round(ms["exported"] / ms["catalogue"], 3)
            print(
                f"LeNet session step (5 calls, batch 1): catalogue {ms['catalogue']:.2f} ms, exported "
                f"{ms['exported']:.2f} ms, ratio {figures['session_step_ratio']}",
                flush=True,
            )
            x, y = data()
            dataset = client.datasets.upload(x, y)
            job_steps_per_s(client, dataset, 5)  # warm the job worker
            bare = svc = 0.0
            for _ in range(repeats):
                bare = max(bare, bare_steps_per_s(steps))
                svc = max(svc, job_steps_per_s(client, dataset, steps))
            figures.update(bare_steps_per_s=round(bare, 2), job_steps_per_s=round(svc, 2))
            figures["job_ratio"] = round(svc / bare, 3)
            print(
                f"ResNet-style job (batch {BATCH}, exported): bare {bare:.2f} steps/s, job {svc:.2f} steps/s, "
                f"ratio {figures['job_ratio']}",
                flush=True,
            )
    finally:
        stop_service(proc)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
