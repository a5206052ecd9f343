"""One rank of a data-parallel job, as the elastic agent of ``worker.launch`` starts it:
``python -m worker.rank TENANT JOB_ID LEASE_TOKEN THREADS AGENT_PID``, with torch.distributed's RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT in its environment.

Rank 0 trains and records under the lease its job worker holds and renews; the others only train.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import traceback
from datetime import timedelta

import redis
import torch
import torch.distributed as dist
from torch._C._distributed_c10d import PrefixStore, TCPStore
from torch.distributed.elastic.multiprocessing.errors import record

from models.settings import get_settings
from models.spec.job import JobCreate
from models.store.connect import redis_options
from models.store.keys import Keys
from models.store.replies import opt_bytes, required
from worker.data_parallel import LEADER_ENDED, PEER_LOST, Group, peer_lost
from worker.jobs import follow, rank_device, train
from worker.recorder import JobKeys, Lease

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
_MEET_S = 300.0  # the least a rank waits for the others to meet and build their trainers (then: the job's timeout)
# The outcomes every rank reaches after the same step (the end, or a stop all-reduced to all of them).
_TOGETHER = frozenset({"succeeded", "cancelled", "pruned", "lease lost"})


def _die_with_parent(parent: int) -> None:
    """A job worker killed outright (SIGKILL, OOM killer) takes its ranks with it: no orphan keeps training."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _attempt_store(group: Group, timeout: timedelta) -> PrefixStore:
    """The agent's store, under this attempt's own prefix: a restarted group meets in the store its failed
    one used, and the ranks' addresses left there by the dead ranks would otherwise be read for theirs."""
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        group.world_size,
        is_master=group.leader and not agent_store,
        timeout=timeout,
        multi_tenant=not agent_store,
    )
    return PrefixStore(f"gradserve/attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


@record  # a rank's uncaught error reaches the agent with its traceback, and so the job's error
def main(argv: list[str]) -> int:
    tenant, job_id, token, threads, agent = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    _die_with_parent(agent)
    torch.set_num_threads(threads)  # the job worker's share of the cores, split between its ranks
    settings = get_settings()
    assert settings.redis_url is not None  # the job worker that started this rank had it
    client = redis.Redis.from_url(settings.redis_url, **redis_options(settings))
    keys = Keys(settings.key_prefix)
    jk = JobKeys(keys, tenant, job_id)
    req = JobCreate.model_validate_json(required(opt_bytes(client.hget(jk.job, "request")), "the job's request"))
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restart and opt_bytes(client.get(jk.lease)) != token.encode():
        # The group is restarted after rank 0 ended the job (failed, say: its lease is gone with it), or the job
        # worker lost the lease: nothing to train. Every rank reads the same and leaves, and the agent is done.
        return 0
    timeout = req.resources.collective_timeout_s or settings.job_collective_timeout_s
    group = Group(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), timeout)
    device = rank_device(req, group)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    meet = timedelta(seconds=max(timeout, _MEET_S))
    backend, device_id = ("nccl", device) if device.type == "cuda" else ("gloo", None)
    if restart:  # a restarted group under its own prefix of the agent's store
        store = _attempt_store(group, meet)
        dist.init_process_group(
            backend, store=store, rank=group.rank, world_size=group.world_size, timeout=meet, device_id=device_id
        )
    else:  # a first attempt meets as torchrun's ranks do (env://)
        dist.init_process_group(backend, timeout=meet, device_id=device_id)
    try:
        if group.leader:
            lease = Lease(client, jk, token, settings.job_lease_ttl_s)  # renewed by the job worker, not here
            outcome = train(client, keys, settings, jk, lease, group)
            if outcome not in _TOGETHER:
                # The others wait in a collective this rank will not join, and leaving the group would wait
                # on them: leave the process now, and the agent stops the rest.
                logging.shutdown()
                os._exit(LEADER_ENDED)
        else:
            follow(client, keys, settings, jk, group)
    except Exception as exc:
        if not peer_lost(exc):
            raise
        # A peer went away (killed, or rank 0 ended the job and left): the job worker names the cause.
        log.warning("rank %d of job %s: a collective failed: %s", group.rank, job_id, exc)
        os._exit(PEER_LOST)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
    except BaseException:
        # The error file is written (by @record); leaving the process normally could wait on the group.
        traceback.print_exc()
        logging.shutdown()
        os._exit(1)
    sys.exit(code)
