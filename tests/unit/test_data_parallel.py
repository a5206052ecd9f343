"""A rank's share of each batch is what PyTorch's DistributedSampler hands that rank, padding included."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from worker.data_parallel import Group


@pytest.mark.parametrize(("n", "batch", "world"), [(37, 8, 2), (40, 8, 2), (30, 12, 3), (3, 4, 4), (1, 4, 4)])
def test_shards_are_the_distributed_samplers_batches(n: int, batch: int, world: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # an epoch's order of the data
    for rank in range(world):
        # DistributedSampler without its own shuffle, over the epoch's order: positions into it.
        positions = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))
        per_rank = batch // world
        expected = [order[positions[i : i + per_rank]] for i in range(0, len(positions), per_rank)]
        got = [Group(rank, world).shard(order[c : c + batch], order) for c in range(0, n, batch)]
        assert [t.tolist() for t in got] == [t.tolist() for t in expected], (rank, got, expected)
