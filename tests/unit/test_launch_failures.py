"""Which rank a failed group's error names: the one that broke it, not those that only lost a peer."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

from worker.data_parallel import LEADER_ENDED, PEER_LOST
from worker.launch import _failure_text, _root_cause


def _failure(rank: int, exitcode: int, folder: Path, message: str | None = None) -> ProcessFailure:
    error_file = folder / f"error_{rank}.json"
    if message is not None:  # as worker.rank's @record writes it
        doc = {"message": {"message": message, "extraInfo": {"py_callstack": "...", "timestamp": "0"}}}
        error_file.write_text(json.dumps(doc))
    return ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file=str(error_file))


def test_the_killed_rank_is_named_not_the_one_that_lost_it(tmp_path: Path) -> None:
    lost = _failure(0, PEER_LOST, tmp_path)
    killed = _failure(1, -signal.SIGKILL, tmp_path)
    rank, failure = _root_cause(ChildFailedError("rank", {0: lost, 1: killed}))
    assert rank == 1 and _failure_text(failure) == "killed by SIGKILL"


def test_a_ranks_own_error_is_its_first_line(tmp_path: Path) -> None:
    bad = _failure(1, 1, tmp_path, "RuntimeError: the job asks for 2 processes\nmore")
    rank, failure = _root_cause(ChildFailedError("rank", {0: _failure(0, -signal.SIGTERM, tmp_path), 1: bad}))
    assert (rank, _failure_text(failure)) == (1, "RuntimeError: the job asks for 2 processes")  # it failed first
    assert _failure_text(_failure(2, 1, tmp_path)) == "exit code 1"  # no error file


def test_a_leader_that_ended_the_job_is_the_cause(tmp_path: Path) -> None:
    ended = _failure(0, LEADER_ENDED, tmp_path)
    stopped = _failure(1, -signal.SIGTERM, tmp_path)  # the agent stopped it after rank 0 left
    assert _root_cause(ChildFailedError("rank", {0: ended, 1: stopped}))[0] == 0
