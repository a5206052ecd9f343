"""Workers SIGKILLed idle or busy around submissions, and a job message lost outright: every job still
runs to the end, once per step."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.conftest import Service
from tests.faults.conftest import PREFIX, OwnRedis, message_taken_by_a_dying_worker
from tests.integration.jobs_helpers import mlp_job, submit, wait_final, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def _pid_of(service: Service, worker_name: str) -> int:
    return next(w["pid"] for w in service.workers() if w["name"] == worker_name)


def test_lost_job_message_is_sent_again(fault_service: Service, own_redis: OwnRedis) -> None:
    r = own_redis.client()
    queue = f"{PREFIX}:celery:cpu"
    with fault_service.client("bob") as bob, fault_service.client("alice") as alice:
        fault_service.wait_workers(2)
        blockers = [submit(bob, mlp_job(steps=100_000)) for _ in range(2)]
        for job_id in blockers:
            wait_until(bob, job_id, lambda d: d["status"] == "running" and d["step"] > 0)
        job_id = submit(alice, mlp_job(steps=5))
        assert r.llen(queue) == 1
        r.delete(queue)  # what a worker killed between taking the message and claiming the job leaves
        for blocker in blockers:
            assert bob.post(f"/v1/jobs/{blocker}/cancel").status_code == 202
        doc = wait_final(alice, job_id, timeout=60)
        assert doc["status"] == "succeeded", doc
        assert int(r.hget(f"{PREFIX}:alice:job:{job_id}", "resent")) >= 1
        for blocker in blockers:
            assert wait_final(bob, blocker)["status"] == "cancelled"


def test_sigkill_idle_and_busy_workers_loses_nothing(fault_service: Service) -> None:
    with fault_service.client("alice") as alice:
        ids = []
        for _ in range(2):  # an idle worker dies just as jobs arrive
            idle = fault_service.wait_workers(2)[0]
            os.kill(idle["pid"], signal.SIGKILL)
            ids += [submit(alice, mlp_job(steps=30, seed=s)) for s in range(2)]
            for job_id in ids[-2:]:
                assert wait_final(alice, job_id, timeout=90)["status"] == "succeeded"
        # A busy worker dies mid-job: the job resumes from its checkpoint elsewhere, each step recorded once.
        fault_service.wait_workers(2)
        busy = submit(alice, mlp_job(steps=1500, capture={"checkpoint_every": 100}))
        doc = wait_until(alice, busy, lambda d: d["status"] == "running" and d["step"] >= 100)
        os.kill(_pid_of(fault_service, doc["worker"]), signal.SIGKILL)
        done = wait_final(alice, busy, timeout=120)
        assert done["status"] == "succeeded" and done["attempt"] >= 2, done
        steps = alice.get(f"/v1/jobs/{busy}/metrics").json()["step"]
        assert steps == list(range(1, 1501))


def test_a_job_taken_by_a_worker_that_died_is_sent_again_within_seconds(
    fault_service: Service, own_redis: OwnRedis
) -> None:
    """Its message went to a dying worker's BRPOP: it used to wait GRADSERVE_JOB_REQUEUE_AFTER_S (then 30 s)
    to be sent again; now once its queue has stood empty, unclaimed, for 2 s. Any worker's reaper sends it
    (the session workers' too, while new job workers start)."""
    r = own_redis.client()
    with fault_service.client("dave") as dave:
        with message_taken_by_a_dying_worker(fault_service, own_redis, "jobs", "cpu"):
            job_id = submit(dave, mlp_job(steps=5))
            submitted = time.monotonic()
        # A correctness bound, far below the 30 s the job used to wait.
        while not int(r.hget(f"{PREFIX}:dave:job:{job_id}", "resent") or 0):
            assert time.monotonic() - submitted < 10, "the lost job was not sent again within 10 s"
            time.sleep(0.1)
        doc = wait_final(dave, job_id, timeout=120)
        assert doc["status"] == "succeeded", doc
