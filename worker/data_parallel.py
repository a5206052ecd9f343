"""One rank's view of a data-parallel job: its place in the torch.distributed group, its shard of each
batch, and the per-step reduction of the metrics and of the leader's decision to stop.

A step's batch is ``batch_size`` samples of the job's data order (the same order a one-process job
takes), and rank r takes every world-size-th of them from the r-th on: exactly the batches
``DistributedSampler(drop_last=False)`` hands each rank for that order, its padding included (an
epoch's short last batch is filled up with the epoch's first samples, so every rank takes as many).
Since the order, the cursor and the generator behind them do not depend on the world size, a
checkpoint resumes at any world size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# How a rank that did not fail on its own ends, so the job worker names the rank that did.
PEER_LOST = 3  # a collective failed: another rank went away
LEADER_ENDED = 4  # rank 0 recorded the job's end (failed, say) while the others wait in a collective


def peer_lost(exc: BaseException) -> bool:
    """A collective that failed because another rank went away (gloo reports it as a plain RuntimeError)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(s in text for s in ("gloo", "NCCL", "Connection closed by peer"))


@dataclass(frozen=True)
class Group:
    rank: int
    world_size: int
    # The steps' collectives wait this long for a rank (None: as long as the group was created with). Ranks
    # meet and build their trainers at their own pace (a restarted group's imports, the data): that waits longer.
    step_timeout_s: float | None = None

    @property
    def leader(self) -> bool:
        """Rank 0 alone records metrics, writes checkpoints and speaks for the job in Redis."""
        return self.rank == 0

    def wrap(self, net: nn.Module, device: torch.device) -> DistributedDataParallel:
        # DDP keeps the user's module as .module: checkpoints are taken from it, without "module." prefixes.
        ddp = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        if self.step_timeout_s is not None:  # its constructor's broadcast was the last collective before the steps
            dist.distributed_c10d._set_pg_timeout(timedelta(seconds=self.step_timeout_s))
        return ddp

    def pad(self, idx: torch.Tensor, epoch_order: torch.Tensor) -> torch.Tensor:
        """A batch (indices into the data) filled up to a multiple of the world size from ``epoch_order``."""
        short = (-idx.numel()) % self.world_size
        if short:
            fill = epoch_order.repeat(math.ceil(short / epoch_order.numel()))[:short]
            idx = torch.cat([idx, fill])
        return idx

    def mine(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a padded batch."""
        return batch[self.rank :: self.world_size]

    def shard(self, idx: torch.Tensor, epoch_order: torch.Tensor) -> torch.Tensor:
        """This rank's samples of a batch (indices into the data); ``epoch_order`` pads a short last batch."""
        return self.mine(self.pad(idx, epoch_order))

    def reduce(
        self, loss: torch.Tensor, correct: torch.Tensor | None, stop: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """The step's loss averaged over the ranks (as DDP averages their gradients), its correct
        predictions summed, and whether the leader asked to stop: one all-reduce a step, so every rank
        stops after the same step."""
        zero = torch.zeros((), dtype=torch.float64, device=loss.device)
        flag = torch.full((), float(stop), dtype=torch.float64, device=loss.device)
        both = torch.stack([loss.detach().double(), zero if correct is None else correct.double(), flag])  # (3,)
        dist.all_reduce(both)  # sum
        # Reading the flag is a device sync per step on CUDA; a later piece may ask only every few steps.
        return both[0] / self.world_size, None if correct is None else both[1], bool(both[2].item())
