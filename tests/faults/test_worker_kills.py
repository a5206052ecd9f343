"""Workers SIGKILLed idle or busy around submissions, and a job message lost outright: every job still
runs to the end, once per step."""

from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import Service
from tests.faults.conftest import PREFIX, OwnRedis
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
