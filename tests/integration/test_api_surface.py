"""The API's surface as a client reads it: page headers, Allow, what a tensor is, idempotent retries of a
deleted object, every documented job field, and an OpenAPI document that lists every status a route answers."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from models.store.keys import Keys
from tests.conftest import Service
from tests.integration.jobs_helpers import MLP, mlp_job, submit, wait_final
from tests.lenet import LENET_SPEC

pytestmark = pytest.mark.integration


def test_the_dashboard_page_forbids_framing_and_foreign_scripts(client: httpx.Client) -> None:
    page = client.get("/ui/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self';" in policy and "default-src 'self'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert client.get("/docs").headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("path", "methods"),
    [("/v1/datasets", {"GET", "POST"}), ("/v1/jobs/job_x", {"GET", "DELETE"}), ("/v1/networks", {"GET", "POST"})],
)
def test_a_405_allows_every_method_of_the_path(client: httpx.Client, path: str, methods: set[str]) -> None:
    response = client.options(path)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} - {"HEAD"} == methods


def _session(client: httpx.Client) -> str:
    response = client.post("/v1/sessions", json={"network": LENET_SPEC, "seed": 0, "device": "cpu"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize("value", [False, True])
def test_a_boolean_is_not_a_tensor(client: httpx.Client, value: bool) -> None:
    sid = _session(client)
    response = client.post(f"/v1/sessions/{sid}/forward", json={"input": value})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "input"] and detail["type"] == "tensor_form"  # not a 0-d tensor of 0.0
    assert client.post(f"/v1/sessions/{sid}/forward", json={"input": {"zeros": [1, 1, 32, 32]}}).status_code == 200
    loss = client.post(f"/v1/sessions/{sid}/loss", json={"criterion": {"type": "MSELoss"}, "target": value})
    assert loss.status_code == 422, loss.text
    assert loss.json()["detail"][0]["loc"] == ["body", "target"]


def test_a_retry_after_its_network_was_deleted_makes_it_anew(client: httpx.Client) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = client.post("/v1/networks", json=MLP, headers=key).json()["id"]
    assert client.delete(f"/v1/networks/{first}").status_code == 204
    again = client.post("/v1/networks", json=MLP, headers=key)
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    made = again.json()["id"]
    assert made != first and client.get(f"/v1/networks/{made}").status_code == 200
    replayed = client.post("/v1/networks", json=MLP, headers=key)  # while it lives, the retry is a replay
    assert replayed.json()["id"] == made and replayed.headers["idempotent-replayed"] == "true"


def test_a_job_says_how_often_it_was_resent(service: Service, client: httpx.Client) -> None:
    job_id = submit(client, mlp_job(steps=2))
    assert client.get(f"/v1/jobs/{job_id}").json()["resent"] == 0
    with redis.Redis.from_url(service.redis_url) as r:  # as worker.reaper's script counts a re-send
        r.hincrby(Keys().job("alice", job_id), "resent", 1)
    assert client.get(f"/v1/jobs/{job_id}").json()["resent"] == 1
    assert wait_final(client, job_id)["status"] == "succeeded"


# (why, method, path template, request) -> the status it must get, which the schema must list.
Ask = Callable[[httpx.Client, httpx.Client, dict[str, str]], httpx.Response]


def _asks() -> list[tuple[str, int, str, str, Ask]]:
    multipart = {"content-type": "multipart/form-data"}  # no boundary: the form cannot be read
    return [
        ("no key", 401, "get", "/v1/jobs", lambda c, anon, ids: anon.get("/v1/jobs")),
        ("unknown query", 422, "get", "/v1/usage", lambda c, anon, ids: c.get("/v1/usage", params={"x": 1})),
        ("unknown network", 404, "post", "/v1/jobs", lambda c, anon, ids: c.post("/v1/jobs", json=_job_of("net_x"))),
        (
            "unknown network",
            404,
            "post",
            "/v1/sessions",
            lambda c, anon, ids: c.post("/v1/sessions", json={"network_id": "net_x"}),
        ),
        (
            "ended",
            409,
            "post",
            "/v1/jobs/{job_id}/cancel",
            lambda c, anon, ids: c.post(f"/v1/jobs/{ids['job']}/cancel"),
        ),
        (
            "no forward",
            409,
            "get",
            "/v1/sessions/{session_id}/graph",
            lambda c, anon, ids: c.get(f"/v1/sessions/{ids['session']}/graph"),
        ),
        (
            "broken form",
            400,
            "post",
            "/v1/datasets",
            lambda c, anon, ids: c.post("/v1/datasets", content=b"x", headers=multipart),
        ),
        (
            "too big",
            413,
            "post",
            "/v1/networks",
            lambda c, anon, ids: c.post("/v1/networks", content=b" " * (2 * 2**20)),
        ),
    ]


def _job_of(network_id: str) -> dict[str, Any]:
    body = mlp_job(network_id=network_id)
    del body["network"]
    return body


def test_openapi_lists_every_status_the_main_routes_answer(service: Service, client: httpx.Client) -> None:
    ids = {"job": submit(client, mlp_job(steps=2)), "session": _session(client)}
    wait_final(client, ids["job"])
    schema = client.get("/openapi.json").json()["paths"]
    with service.client(tenant="") as anon:
        for why, status, method, template, ask in _asks():
            response = ask(client, anon, ids)
            assert response.status_code == status, (why, response.text[:300])
            assert str(status) in schema[template][method]["responses"], (why, template, method)


def test_openapi_lists_the_quota_answer(service: Service) -> None:
    """bob's concurrent jobs fill up (GRADSERVE_MAX_CONCURRENT_JOBS is 4), then he cancels them."""
    with service.client("bob") as bob:
        taken = []
        try:
            for _ in range(5):
                response = bob.post("/v1/jobs", json=mlp_job(steps=100_000))
                if response.status_code != 202:
                    break
                taken.append(response.json()["id"])
            assert response.status_code == 429, response.text
        finally:
            for job_id in taken:
                bob.post(f"/v1/jobs/{job_id}/cancel")
        schema = bob.get("/openapi.json").json()["paths"]
    for template in ("/v1/jobs", "/v1/jobs/{job_id}/fork", "/v1/sessions"):
        assert "429" in schema[template]["post"]["responses"], template
