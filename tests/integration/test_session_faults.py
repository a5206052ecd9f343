"""Session calls under faults and overlap: a worker SIGKILLed mid-call, retried calls, many clients at once.

Runs its own `gradserve up` with a short heartbeat (so a dead worker shows within seconds), a short
line for session calls and a small sessions quota, so each bound is reached quickly.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
import torch

from models.nn.build import build_network
from models.spec.network import NetworkSpec
from tests.conftest import Service, running_service
from tests.lenet import LENET_SPEC, Net

pytestmark = pytest.mark.integration
HEARTBEAT_TTL_S = 6
QUEUE_MAX = 6
MAX_SESSIONS = 40
# Heavy enough that a forward on [8, 3, 96, 96] takes a good fraction of a second on one thread.
SLOW_SPEC = {
    "name": "Slow",
    "input_shape": [3, 96, 96],
    "layers": [
        {"name": "c1", "type": "Conv2d", "in_channels": 3, "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"name": "c2", "type": "Conv2d", "in_channels": 64, "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"name": "c3", "type": "Conv2d", "in_channels": 64, "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"name": "c4", "type": "Conv2d", "in_channels": 64, "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"type": "flatten", "start_dim": 1},
        {"name": "fc", "type": "Linear", "in_features": 64 * 96 * 96, "out_features": 2},
    ],
}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "GRADSERVE_WORKER_HEARTBEAT_TTL_S": str(HEARTBEAT_TTL_S),
        "GRADSERVE_SESSION_QUEUE_MAX": str(QUEUE_MAX),
        "GRADSERVE_CALL_TIMEOUT_S": "40",
        "GRADSERVE_MAX_SESSIONS": str(MAX_SESSIONS),
    }
    with running_service(tmp_path_factory.mktemp("faults"), workers=1, session_workers=2, extra_env=env) as svc:
        yield svc


def create(client: httpx.Client, spec: dict, **extra: object) -> httpx.Response:
    return client.post("/v1/sessions", json={"network": spec, "seed": 5, "device": "cpu", **extra})


def _claimer(redis_url: str, timeout: float = 60) -> str:
    """The name of the worker that claimed the one session call in flight."""
    r = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key in r.scan_iter(match="gs:sys:call:*:claim"):
            name = r.get(key)
            if name and name != b"abandoned" and r.ttl(key) > 0:
                return name.decode()
        time.sleep(0.01)
    raise AssertionError("no worker claimed the call")


def test_worker_killed_mid_call_is_a_503_and_the_session_goes_on(faulty: Service) -> None:
    threads = {w["threads"] for w in faulty.wait_workers(2, lane="sessions")}
    torch.manual_seed(5)
    local = build_network(NetworkSpec.model_validate(SLOW_SPEC))
    with faulty.client() as c:
        sid = create(c, SLOW_SPEC).json()["id"]
        r = redis.Redis.from_url(faulty.redis_url)
        for key in r.scan_iter(match="gs:sys:call:*:claim"):
            r.delete(key)  # only the slow call's claim is looked for below
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(c.post, f"/v1/sessions/{sid}/forward", json={"input": {"randn": [8, 3, 96, 96]}})
            victim = next(w for w in faulty.workers("sessions") if w["name"] == _claimer(faulty.redis_url))
            os.kill(victim["pid"], signal.SIGKILL)
            answer = slow.result()
        # Noticed through the heartbeat, well before the call timeout (which would be a 504).
        assert answer.status_code == 503, answer.text
        assert "died" in answer.json()["detail"] and answer.headers["Retry-After"]

        x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(9))
        after = c.post(f"/v1/sessions/{sid}/forward", json={"input": x.tolist()})
    assert after.status_code == 200, after.text
    before = torch.get_num_threads()
    torch.set_num_threads(threads.pop())
    try:
        assert torch.equal(torch.tensor(after.json()["output"]), local(x))
    finally:
        torch.set_num_threads(before)


def test_a_retried_call_is_applied_once(faulty: Service) -> None:
    torch.manual_seed(5)
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    target = torch.randn(2, 10, generator=torch.Generator().manual_seed(2))
    with faulty.client() as c:
        sid = create(c, LENET_SPEC, optimizer={"type": "SGD", "lr": 0.1, "momentum": 0.9}).json()["id"]
        base = f"/v1/sessions/{sid}"
        c.post(f"{base}/forward", json={"input": x.tolist()})
        c.post(f"{base}/loss", json={"criterion": {"type": "MSELoss"}, "target": target.tolist()})
        c.post(f"{base}/backward")
        key = {"Idempotency-Key": "step-0001"}
        first = c.post(f"{base}/step", headers=key)
        version = c.get(base).json()["version"]
        again = c.post(f"{base}/step", headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json() == first.json() and again.headers["Call-Id"] == "step-0001"
        assert c.get(base).json()["version"] == version  # not applied a second time
        other = c.post(f"{base}/zero_grad", headers=key)
        assert other.status_code == 409 and "already used for 'step'" in other.json()["detail"]
        bad = c.post(f"{base}/step", headers={"Idempotency-Key": "no spaces allowed"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
        weights = c.get(f"{base}/parameters/fc3.bias").json()["data"]
        # A create retried with its key gives the same session, not a second one.
        made = [create(c, LENET_SPEC, optimizer=None) for _ in range(1)]
        made += [c.post("/v1/sessions", json={"network": LENET_SPEC}, headers={"Idempotency-Key": "mk"}) for _ in "ab"]
    loss = torch.nn.MSELoss()(net(x), target)
    loss.backward()
    optimizer.step()
    assert torch.equal(torch.tensor(weights), net.fc3.bias.detach())
    assert made[1].status_code == made[2].status_code == 201
    assert made[1].json()["id"] == made[2].json()["id"] != made[0].json()["id"]


def test_many_clients_at_once_get_answers_or_503s_never_another_5xx(faulty: Service) -> None:
    x = {"randn": [1, 1, 32, 32], "seed": 3}

    def client_run(_: int) -> list[httpx.Response]:
        with faulty.client() as c:
            made = create(c, LENET_SPEC)
            if made.status_code != 201:
                return [made]
            sid = made.json()["id"]
            answers = [c.post(f"/v1/sessions/{sid}/forward", json={"input": x}) for _ in range(8)]
            c.delete(f"/v1/sessions/{sid}")
            return [made, *answers]

    with ThreadPoolExecutor(32) as pool:
        answers = [r for batch in pool.map(client_run, range(32)) for r in batch]
    statuses = {r.status_code for r in answers}
    assert statuses <= {200, 201, 503}, [r.text for r in answers if r.status_code not in (200, 201, 503)][:3]
    refused = [r for r in answers if r.status_code == 503]
    assert refused and all(r.headers.get("Retry-After") for r in refused)
    assert "GRADSERVE_SESSION_QUEUE_MAX" in refused[0].json()["detail"]
    assert sum(r.status_code == 200 for r in answers) > 0
    outputs = {str(r.json()["output"]) for r in answers if r.status_code == 200}
    assert len(outputs) == 1  # every session has the same seed and input: the same numbers


def test_sessions_quota_holds_under_concurrent_creates(faulty: Service) -> None:
    # Fewer at once than the line holds, so every create is either admitted or refused by the quota.
    with faulty.client("bob") as c, ThreadPoolExecutor(QUEUE_MAX - 2) as pool:
        made = list(pool.map(lambda _: create(c, LENET_SPEC), range(MAX_SESSIONS + 12)))
        statuses = [r.status_code for r in made]
        assert (statuses.count(201), statuses.count(429)) == (MAX_SESSIONS, 12), statuses
        assert "GRADSERVE_MAX_SESSIONS" in next(r for r in made if r.status_code == 429).json()["detail"]
        for r in made:
            if r.status_code == 201:
                assert c.delete(f"/v1/sessions/{r.json()['id']}").status_code == 204
        assert create(c, LENET_SPEC).status_code == 201  # deleting gave the places back
