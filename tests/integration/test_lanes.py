"""The default `gradserve up` layout: one job worker and one session worker, each with its share of the cores.
Session calls never wait behind training; queued jobs say their place in line."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import torch

from launcher.threads import split_threads, usable_cores
from tests.conftest import Service, running_service
from tests.integration.jobs_helpers import lenet_job, submit, wait_until
from tests.integration.test_sessions import test_the_tutorial_step_by_step_bit_exact as tutorial

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def default_layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("lanes"), workers=1, session_workers=1) as svc:
        yield svc


@pytest.fixture
def alice(default_layout: Service) -> Iterator[httpx.Client]:
    with default_layout.client("alice") as c:
        yield c


def test_readyz_shows_both_lanes_with_their_threads(default_layout: Service) -> None:
    with default_layout.client() as c:
        ready = c.get("/readyz").json()
    assert ready["lanes"] == {"jobs": 1, "sessions": 1}
    per_job, per_session = split_threads(usable_cores(), 1, 1)
    (job,) = default_layout.workers("jobs")
    (session,) = default_layout.workers("sessions")
    assert (job["queues"], job["threads"]) == (["cpu"], per_job)
    assert (session["queues"], session["threads"]) == (["sessions-cpu"], per_session)
    # Never more busy threads than cores: a job's OpenMP threads spun waiting for a descheduled sibling.
    assert job["cores"] == session["cores"] == usable_cores()
    assert job["threads"] + session["threads"] <= max(2, usable_cores())
    assert "with 1 job worker(s)" in default_layout.log.read_text()


def test_the_tutorial_runs_beside_a_training_job(default_layout: Service, alice: httpx.Client) -> None:
    job_id = submit(alice, lenet_job(steps=100_000, batch_size=64))
    try:
        before = wait_until(alice, job_id, lambda d: d["status"] == "running" and d["step"] >= 1)
        assert before["threads"] == split_threads(usable_cores(), 1, 1)[0]
        (session,) = default_layout.workers("sessions")
        threads = torch.get_num_threads()
        torch.set_num_threads(session["threads"])
        try:
            tutorial(alice)  # every call answered, bit for bit, while the job trains
        finally:
            torch.set_num_threads(threads)
        after = alice.get(f"/v1/jobs/{job_id}").json()
        # The calls did not wait for the job: it is still running, and it kept training meanwhile.
        assert after["status"] == "running" and after["step"] > before["step"], (before, after)
    finally:
        alice.post(f"/v1/jobs/{job_id}/cancel")


def test_queued_jobs_show_their_place_in_line(alice: httpx.Client) -> None:
    ids = [submit(alice, lenet_job(steps=100_000, batch_size=64)) for _ in range(3)]
    try:
        wait_until(alice, ids[0], lambda d: d["status"] == "running")
        places = [alice.get(f"/v1/jobs/{j}").json().get("queue_position") for j in ids]
        assert places == [None, 1, 2]
    finally:
        for job_id in reversed(ids):
            alice.post(f"/v1/jobs/{job_id}/cancel")
        for job_id in ids:
            wait_until(alice, job_id, lambda d: d["status"] == "cancelled")
