"""Jobs of many processes: a 2-process job against the same DDP loop written out locally (spawned
with torch.multiprocessing, on gloo, with PyTorch's DistributedSampler), bit for bit; its checkpoint in
the user's plain module; a fork of it going on at 1 process; bad resources named."""

from __future__ import annotations

import copy
import datetime
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load as st_load
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from api.routes.sweeps import EXAMPLE
from tests.conftest import detail_of
from tests.integration.jobs_helpers import LocalMLP, mlp_job, sse, submit, wait_final, wait_until

N, BATCH, STEPS, DATA_SEED, SEED = 37, 8, 6, 1, 2  # 37 = 4 batches of 8 and one of 5, padded to 6 at 2 ranks


def train_ddp(rank: int, world: int, meet: str, threads: int, first: int, last: int, folder: str) -> None:
    """One rank of the local reference: the loop a user writes with DDP, from step ``first`` (0: the
    seeded start, else the state saved at that step) to ``last``; rank 0 saves the state at each step."""
    torch.set_num_threads(threads)
    # A file to meet at, not a port: a free port picked here could be taken by another process before the
    # ranks bind it (the suite runs services beside), and the ranks would wait on it forever.
    wait = datetime.timedelta(seconds=60)
    dist.init_process_group("gloo", init_method=f"file://{meet}", rank=rank, world_size=world, timeout=wait)
    g = torch.Generator().manual_seed(DATA_SEED)  # the job's random dataset
    x, y = torch.randn((N, 6), generator=g), torch.randn((N, 3), generator=g)
    torch.manual_seed(SEED)
    net = LocalMLP()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    if first:
        saved = torch.load(Path(folder, f"state_{first}.pt"), weights_only=True)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
    ddp = DistributedDataParallel(net)
    sampler = DistributedSampler(TensorDataset(x, y), num_replicas=world, rank=rank, shuffle=False)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH // world, sampler=sampler)  # this rank's share
    step, losses = 0, []
    while step < last:
        for xb, yb in loader:
            step += 1
            if step <= first:
                continue  # already taken before the checkpoint
            loss = F.mse_loss(ddp(xb), yb)  # forward, loss
            loss.backward()  # DDP averages the gradients over the ranks
            opt.step()
            opt.zero_grad(set_to_none=True)
            mean = loss.detach().double()
            dist.all_reduce(mean)  # the loss the job records: the ranks' mean
            losses.append(float(mean / world))
            if rank == 0:
                state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "losses": losses}
                torch.save(state, Path(folder, f"state_{step}.pt"))
            if step == last:
                break
    dist.destroy_process_group()


def reference(world: int, threads: int, first: int, folder: Path, last: int = STEPS) -> dict[str, Any]:
    meet = str(folder / f"meet-{uuid.uuid4().hex}")  # a new file each time: a used one cannot be met at again
    if world == 1:  # one rank: this process
        before = torch.get_num_threads()
        try:
            train_ddp(0, 1, meet, threads, first, last, str(folder))
        finally:
            torch.set_num_threads(before)
    else:
        ranks = mp.spawn(train_ddp, args=(world, meet, threads, first, last, str(folder)), nprocs=world, join=False)
        # The ranks' result is on disk once rank 0 saved the last step; a rank that then hangs on its way out
        # (seen once in a busy suite, inside gloo's teardown) must not hold the test until its timeout.
        deadline = time.monotonic() + 240
        done_file = folder / f"state_{last}.pt"
        while not ranks.join(timeout=1):
            if done_file.exists() and time.monotonic() > min(deadline, _seen(done_file) + 15):
                for proc in ranks.processes:
                    proc.kill()
                break
            assert time.monotonic() < deadline, "the local DDP reference did not finish"
    return torch.load(folder / f"state_{last}.pt", weights_only=True)


def _seen(path: Path) -> float:
    """When ``path`` was last written, on this process's monotonic clock."""
    return time.monotonic() - (time.time() - path.stat().st_mtime)


def ddp_job(**overrides: Any) -> dict[str, Any]:
    body = {
        "dataset": {"source": "random", "num_samples": N, "seed": DATA_SEED},
        "batch_size": BATCH,
        "steps": STEPS,
        "seed": SEED,
        "shuffle": False,
        "capture": {"checkpoint_every": 3, "graph": False},
        "resources": {"nodes": 1, "processes_per_node": 2},
    }
    return mlp_job(**{**body, **overrides})


def test_two_processes_equal_the_local_ddp_loop_and_resume_at_1_and_back(client: httpx.Client, tmp_path: Path) -> None:
    job_id = submit(client, ddp_job())
    alone = submit(client, ddp_job(steps=3, resources={"processes_per_node": 1}))  # one process, same batch_size
    assert client.get(f"/v1/jobs/{job_id}").json()["world_size"] == 2  # shown while queued
    done = wait_final(client, job_id)
    assert done["status"] == "succeeded", done.get("error")
    assert done["world_size"] == 2 and done["step"] == STEPS

    local = reference(2, done["threads"], 0, tmp_path)
    remote = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint").content)
    assert set(remote) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}  # no "module." prefixes
    for name, tensor in local["model"].items():
        assert torch.equal(remote[name], tensor), name
    assert client.get(f"/v1/jobs/{job_id}/metrics").json()["loss"] == local["losses"]
    LocalMLP().load_state_dict(remote)  # the user's plain module takes it as it is
    # Before the epoch's padded last batch, one process at the same batch_size agrees but for the rounding
    # of the gradient average.
    at_3 = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint", params={"step": 3}).content)
    one = st_load(client.get(f"/v1/jobs/{wait_final(client, alone)['id']}/checkpoint").content)
    assert all(torch.allclose(one[name], tensor, rtol=1e-5, atol=1e-7) for name, tensor in at_3.items())
    assert not all(torch.equal(one[name], tensor) for name, tensor in at_3.items())  # not the same computation

    # The checkpoint at step 3 goes on at 2 processes, bit for bit, and at one: the same global batches, whole.
    again = client.post(f"/v1/jobs/{job_id}/fork", json={"step": 3})
    fork = client.post(f"/v1/jobs/{job_id}/fork", json={"step": 3, "changes": {"resources": {"processes_per_node": 1}}})
    assert again.status_code == fork.status_code == 202, (again.text, fork.text)
    resumed = wait_final(client, again.json()["id"])
    assert resumed["status"] == "succeeded" and resumed["world_size"] == 2, resumed.get("error")
    again_weights = st_load(client.get(f"/v1/jobs/{resumed['id']}/checkpoint").content)
    assert again_weights.keys() == remote.keys()
    assert all(torch.equal(remote[name], tensor) for name, tensor in again_weights.items())
    child = wait_final(client, fork.json()["id"])
    assert child["status"] == "succeeded", child.get("error")
    assert child["world_size"] == 1
    local = reference(1, child["threads"], 3, tmp_path)
    remote = st_load(client.get(f"/v1/jobs/{child['id']}/checkpoint").content)
    for name, tensor in local["model"].items():
        assert torch.equal(remote[name], tensor), name

    # And back: the 1-process checkpoint goes on at 2 processes.
    changes = {"steps": STEPS + 3, "resources": {"processes_per_node": 2}}
    back = client.post(f"/v1/jobs/{child['id']}/fork", json={"step": STEPS, "changes": changes})
    assert back.status_code == 202, back.text
    grandchild = wait_final(client, back.json()["id"])
    assert grandchild["status"] == "succeeded" and grandchild["world_size"] == 2, grandchild.get("error")
    local = reference(2, grandchild["threads"], STEPS, tmp_path, last=STEPS + 3)
    remote = st_load(client.get(f"/v1/jobs/{grandchild['id']}/checkpoint").content)
    for name, tensor in local["model"].items():
        assert torch.equal(remote[name], tensor), name


def _ranks_of(job_id: str) -> list[int]:
    """The pids of the job's rank processes on this machine (their command line names the job)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if b"worker.rank" in argv and job_id.encode() in argv:
            found.append(int(proc.name))
    return found


def test_cancel_stops_every_rank_and_keeps_the_step(client: httpx.Client) -> None:
    job_id = submit(client, ddp_job(steps=20_000, dataset={"source": "random", "num_samples": 4096, "seed": 1}))
    wait_until(client, job_id, lambda d: (d.get("step") or 0) >= 2, timeout=60)
    assert len(_ranks_of(job_id)) == 2
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    done = wait_final(client, job_id)
    assert done["status"] == "cancelled" and 2 <= done["step"] < 20_000
    assert done["checkpoint_step"] == done["step"]  # the state it stopped at, to fork or resume from
    _no_ranks_left(job_id)


def _no_ranks_left(job_id: str) -> None:
    deadline = time.monotonic() + 10
    while _ranks_of(job_id):  # the group ends with the job: no rank left training
        assert time.monotonic() < deadline, _ranks_of(job_id)
        time.sleep(0.1)


def test_a_failed_rank_fails_the_job_naming_it_and_ends_the_group(client: httpx.Client) -> None:
    diverges = submit(client, ddp_job(steps=200, optimizer={"type": "SGD", "lr": 10000.0, "momentum": 0.9}))
    no_restarts = {"processes_per_node": 2, "max_restarts": 0, "collective_timeout_s": 2}
    big = {"source": "random", "num_samples": 4096, "seed": 1}
    job_id = submit(client, ddp_job(steps=20_000, dataset=big, resources=no_restarts))
    hung = submit(client, ddp_job(steps=20_000, dataset=big, resources=no_restarts))
    wait_until(client, job_id, lambda d: (d.get("step") or 0) >= 2, timeout=60)
    os.kill(max(_ranks_of(job_id)), signal.SIGKILL)  # rank 1, started after rank 0
    done = wait_final(client, job_id)
    assert done["status"] == "failed" and done["error"] == "rank 1 of 2 failed: killed by SIGKILL", done
    _no_ranks_left(job_id)
    # A rank that stops answering: rank 0 waits in the step's all-reduce past the job's collective timeout.
    wait_until(client, hung, lambda d: (d.get("step") or 0) >= 2, timeout=60)
    stopped = max(_ranks_of(hung))
    os.kill(stopped, signal.SIGSTOP)
    done = wait_final(client, hung, timeout=30)  # the timeout, and the agent's teardown: not held running
    assert done["status"] == "failed", done
    assert done["error"] == "rank 1 of 2 stopped answering: a collective waited past 2 s", done
    _no_ranks_left(hung)  # the stopped rank too: killed, not left behind
    # Rank 0 fails the job on a non-finite loss while rank 1 waits in the next step's all-reduce.
    done = wait_final(client, diverges)
    assert done["status"] == "failed" and done["error"].startswith("loss is inf at step"), done
    _no_ranks_left(diverges)


def test_a_killed_rank_and_a_stopped_one_restart_the_group_from_its_checkpoint(
    client: httpx.Client, tmp_path: Path
) -> None:
    steps, every = 3000, 200
    resources = {"processes_per_node": 2, "max_restarts": 2, "collective_timeout_s": 2}
    job_id = submit(client, ddp_job(steps=steps, capture={"checkpoint_every": every}, resources=resources))
    wait_until(client, job_id, lambda d: (d.get("checkpoint_step") or 0) >= every, timeout=60)
    first = _ranks_of(job_id)
    os.kill(max(first), signal.SIGKILL)  # rank 1, started after rank 0
    # The agent starts the group again; its rank 1 then stops answering, and the group is restarted once more.
    deadline = time.monotonic() + 60
    while len(fresh := [p for p in _ranks_of(job_id) if p not in first]) < 2:
        assert time.monotonic() < deadline and client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
        time.sleep(0.05)
    at = client.get(f"/v1/jobs/{job_id}").json()["step"]
    again = wait_until(client, job_id, lambda d: d["step"] > at, timeout=60)  # it trains again
    assert again["status"] == "running" and again["step"] < steps, again  # with steps left to stop it in
    stopped = max(fresh)
    os.kill(stopped, signal.SIGSTOP)
    done = wait_final(client, job_id)
    assert done["status"] == "succeeded" and done["step"] == steps, done.get("error")
    assert not Path(f"/proc/{stopped}").exists()  # killed as its group ended, not left stopped
    _no_ranks_left(job_id)

    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        events = list(sse(response))
    running = [json.loads(e["data"]) for e in events if e["event"] == "state"]
    running = [e for e in running if e["status"] == "running" and "resumed_from" in e]
    assert [e.get("restart") for e in running] == [None, 1, 2], running
    assert running[1]["resumed_from"] >= every and running[1]["resumed_from"] % every == 0, running
    metrics = [json.loads(e["data"])["step"] for e in events if e["event"] == "metric"]
    assert metrics == list(range(1, steps + 1))  # each step once, though some were trained twice
    # The final weights and every loss equal an undisturbed run's: the local DDP loop.
    local = reference(2, done["threads"], 0, tmp_path, last=steps)
    remote = st_load(client.get(f"/v1/jobs/{job_id}/checkpoint").content)
    for name, tensor in local["model"].items():
        assert torch.equal(remote[name], tensor), name
    assert client.get(f"/v1/jobs/{job_id}/metrics").json()["loss"] == local["losses"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"resources": {"nodes": 2, "processes_per_node": 2}}, "nodes", "multi-node"),
        ({"resources": {"processes_per_node": 0}}, "processes_per_node", "greater than or equal to 1"),
        ({"resources": {"processes_per_node": 3}}, "body", "batch_size 8 is the batch over all 3 processes"),
        ({"strategy": "fsdp"}, "strategy", "not supported yet"),
        ({"resources": {"processes_per_node": 2, "gpus": 1}}, "gpus", "Extra inputs"),
        ({"breakpoints": {"nonfinite": True}}, "body", "breakpoints are not supported yet"),
    ],
)
def test_bad_resources_are_named(client: httpx.Client, change: dict, field: str, words: str) -> None:
    body = {**ddp_job(), **change}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    detail = detail_of(response)
    assert field in detail["loc"] and words in detail["msg"], detail


def test_a_sweeps_template_takes_resources_as_a_job_does(client: httpx.Client) -> None:
    body = copy.deepcopy(EXAMPLE)
    body["template"]["resources"] = {"nodes": 2}
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 422, response.text
    assert detail_of(response)["loc"] == ["body", "template", "resources", "nodes"], response.text
    body["template"]["resources"] = {"processes_per_node": 2}
    body["template"]["batch_size"] = 33
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 422 and "multiple of 2" in detail_of(response)["msg"], response.text
