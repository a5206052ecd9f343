"""The dashboard in a real headless Chromium (Debian's package, driven by Playwright) against the live service.

Every page blocks requests that leave the service, so these tests also show the pages work offline.
Screenshots go to .gradserve/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.conftest import Service
from tests.integration.browser_tab import Tab, browser, tab
from tests.integration.jobs_helpers import lenet_job, mlp_job, submit, wait_final, wait_until

pytestmark = pytest.mark.integration
__all__ = ["browser", "tab"]  # fixtures, used by name


def test_wrong_key_shows_a_clear_message_and_no_data(tab: Tab, client: httpx.Client) -> None:
    wait_final(client, submit(client, mlp_job()))  # alice has a job the page must not show
    page = tab.open("#/jobs", "not-a-key")
    page.wait_for_selector("#auth-error:not([hidden])")
    assert "unknown API key" in page.inner_text("#auth-error")
    assert page.locator("#jobs-body tr").count() == 0
    tab.shot("wrong-key")


def test_jobs_list_shows_progress_live_and_cancels(tab: Tab, service: Service, client: httpx.Client) -> None:
    job_id = submit(client, lenet_job(steps=20_000))
    wait_until(client, job_id, lambda d: d["status"] == "running" and d["step"] > 0)
    page = tab.open("#/jobs", service.keys["alice"])
    row = f'tr[data-job-id="{job_id}"]'
    page.wait_for_selector(f'{row} .badge[data-status="running"]')
    first = int(page.get_attribute(f"{row} .progress", "data-step") or 0)
    page.wait_for_function(  # no reload: the same document, its row updated in place
        "([sel, n]) => Number(document.querySelector(sel)?.dataset.step) > n", arg=[f"{row} .progress", first]
    )
    tab.shot("jobs-list")
    page.click(f"{row} button.cancel")
    page.wait_for_selector(f'{row} .badge[data-status="cancelled"]')
    assert wait_final(client, job_id)["status"] == "cancelled"


def test_an_answer_for_a_page_left_never_lands_on_the_next(tab: Tab, service: Service, client: httpx.Client) -> None:
    # The page asks for the job before any key is saved; its 401 is held back until the page, asked again with
    # the key, shows the job. That late 401 once wiped the shown job (and its live curves) off the screen.
    job_id = submit(client, mlp_job())
    assert wait_final(client, job_id)["status"] == "succeeded"
    tab.hold = lambda request: f"/v1/jobs/{job_id}" in request.url and "authorization" not in request.headers
    page = tab.open(f"#/jobs/{job_id}", None)
    page.wait_for_function("() => true")  # lets Playwright see the held request
    assert len(tab.held) == 1, [r.request.url for r in tab.held]
    tab.hold = None
    page.fill("#key-input", service.keys["alice"])
    page.click("#key-save")
    page.wait_for_function("() => Number(document.querySelector('#chart-loss')?.dataset.points) === 20")
    from playwright.sync_api import Error as PlaywrightError

    try:
        tab.held[0].continue_()  # the stale request goes out now, if the page still waits on it
    except PlaywrightError:
        pass  # the page dropped it when it moved on: no answer can reach it
    else:  # the page has the answer once its body is in and the page has run a task of its own after it
        response = tab.held[0].request.response()
        if response is not None:
            response.finished()
        page.evaluate("() => new Promise((done) => setTimeout(done, 0))")
    assert page.is_hidden("#auth-error"), page.inner_text("#auth-error")
    assert tab.points("#chart-loss") == 20 and page.locator("#view-error").count() == 0


def test_job_page_curves_grow_live_and_show_what_was_captured(tab: Tab, service: Service, client: httpx.Client) -> None:
    # A job far longer than the test, cancelled once the page has shown its curves growing: nothing here
    # depends on how fast the machine trains.
    capture = {"gradients_every": 500, "graph": True, "checkpoint_every": 500}
    job_id = submit(client, lenet_job(steps=100_000, capture=capture))
    page = tab.open(f"#/jobs/{job_id}", service.keys["alice"])
    page.wait_for_function("() => Number(document.querySelector('#chart-loss')?.dataset.points) > 0")
    first = tab.points("#chart-loss")
    page.wait_for_function("n => Number(document.querySelector('#chart-loss').dataset.points) > n", arg=first)
    assert page.locator('#job-status .badge[data-status="running"]').count() == 1
    page.wait_for_selector("#grad-table tbody tr")  # a snapshot shown while the job runs
    page.click("#job-cancel")
    page.wait_for_selector('#job-status .badge[data-status="cancelled"]')
    count = client.get(f"/v1/jobs/{job_id}/metrics").json()["count"]
    assert 0 < count < 100_000
    page.wait_for_function("n => Number(document.querySelector('#chart-loss').dataset.points) === n", arg=count)
    assert tab.points("#chart-accuracy") == count and tab.points("#chart-lr") == count
    snapshots = client.get(f"/v1/jobs/{job_id}/gradients").json()["steps"]
    page.wait_for_function(
        "n => Number(document.querySelector('#chart-grad-norms')?.dataset.points) === n", arg=len(snapshots)
    )
    assert page.locator("#grad-table tbody tr").count() == 10  # LeNet's ten parameters
    if shutil.which("dot"):
        page.wait_for_selector("#graph svg")
        assert "AccumulateGrad" in page.inner_text("#graph")
    else:
        page.wait_for_selector("#graph-message")
        assert "Graphviz" in page.inner_text("#graph-message")
    checkpoint_step = client.get(f"/v1/jobs/{job_id}").json()["checkpoint_step"]
    shown_step = "n => document.querySelector('#checkpoint-table tbody td')?.textContent === n"
    page.wait_for_function(shown_step, arg=str(checkpoint_step))
    assert '"Conv2d"' in page.inner_text("#job-request")
    assert page.is_hidden("#job-error")
    tab.shot("job")


# The bold value beside a label in the header's facts ("epoch 3", "created 4 s ago").
FACT = """k => [...document.querySelectorAll('.facts > span')]
  .find((s) => s.firstChild.textContent.trim() === k)?.querySelector('b')?.textContent"""


def test_job_header_follows_a_live_job(tab: Tab, service: Service, client: httpx.Client) -> None:
    from api.routes.sweeps import EXAMPLE

    # digits hold out a split, so each epoch's end brings a held-out accuracy; far more epochs than the test sees
    body = {**EXAMPLE["template"], "epochs": 1000, "capture": {"graph": False}}
    job_id = submit(client, body)
    wait_until(client, job_id, lambda d: d["status"] == "running" and d["step"] > 0)
    try:
        page = tab.open(f"#/jobs/{job_id}", service.keys["alice"])
        page.wait_for_selector("#chart-loss")
        first = {k: page.evaluate(FACT, k) for k in ("epoch", "held-out acc", "created")}
        assert all(first.values()), first
        page.wait_for_function(f"n => Number(({FACT})('epoch')) > n", arg=int(first["epoch"]))
        page.wait_for_function(f"a => ({FACT})('held-out acc') !== a", arg=first["held-out acc"])
        page.wait_for_function(f"c => ({FACT})('created') !== c", arg=first["created"])
        assert 0 <= float(page.evaluate(FACT, "held-out acc")) <= 1
        tab.shot("job-live-header")
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel")
    assert wait_final(client, job_id)["status"] == "cancelled"


def test_a_failed_jobs_error_is_prominent(tab: Tab, service: Service, client: httpx.Client) -> None:
    job_id = submit(client, mlp_job(optimizer={"type": "SGD", "lr": 1e4}, steps=50))
    assert wait_final(client, job_id)["status"] == "failed"
    page = tab.open(f"#/jobs/{job_id}", service.keys["alice"])
    page.wait_for_selector("#job-error:not([hidden])")
    assert "failed" in page.inner_text("#job-error") and "loss" in page.inner_text("#job-error")
    tab.shot("job-failed")


def test_a_paused_job_shows_its_breakpoint_and_resumes(tab: Tab, service: Service, client: httpx.Client) -> None:
    body = mlp_job(optimizer={"type": "SGD", "lr": 4.0, "momentum": 0.9}, steps=60, accumulate_grad_batches=1)
    job_id = submit(client, {**body, "precision": "bf16-mixed", "breakpoints": {"grad_norm_above": 20.0}})
    paused = wait_until(client, job_id, lambda d: d["status"] in {"paused", "failed", "succeeded"})
    assert paused["status"] == "paused", paused
    page = tab.open(f"#/jobs/{job_id}", service.keys["alice"])
    page.wait_for_selector("#job-paused:not([hidden])")
    text = page.inner_text("#job-paused-text")
    assert f"step {paused['breakpoint']['step']}" in text and "grad_norm_above" in text
    assert "precision bf16-mixed" in page.inner_text(".facts")
    tab.shot("job-paused")
    page.click("#job-open-session")  # the paused step as a live session
    page.wait_for_url("**#/sessions/sess_*")
    sid = page.url.split("#/sessions/")[1]
    assert client.get(f"/v1/sessions/{sid}/batch").json()["step"] == paused["breakpoint"]["step"]
    page.go_back()
    page.wait_for_selector("#job-paused:not([hidden])")
    page.fill("#job-resume-lr", "0.01")
    page.click("#job-resume")
    done = wait_final(client, job_id)
    assert done["status"] == "succeeded" and done["request"]["optimizer"]["lr"] == 4.0
    page.wait_for_selector("#job-paused", state="hidden")


def test_a_steps_activations_are_shown_from_the_loss_curve(tab: Tab, service: Service, client: httpx.Client) -> None:
    job_id = submit(client, mlp_job(steps=20, capture={"checkpoint_every": 5, "graph": False}))
    assert wait_final(client, job_id)["status"] == "succeeded"
    page = tab.open(f"#/jobs/{job_id}", service.keys["alice"])
    page.wait_for_selector("#chart-loss[data-points='20']")
    box = page.locator("#chart-loss .u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.wait_for_selector("#acts-result table.acts")
    step = int(page.input_value("#acts-step"))
    assert 1 <= step <= 20
    text = page.inner_text("#acts-result")
    loss = client.get(f"/v1/jobs/{job_id}/metrics").json()["loss"][step - 1]
    assert f"step {step}" in text and "fc1 [8, 16]" in text and "fc2 [8, 3]" in text and "gradient" in text
    assert page.locator("#acts-result .hist i").count() >= 24 * 2
    assert abs(float(text.split("loss ")[1].split()[0]) - loss) < 1e-3
    tab.shot("job-activations")


def test_compare_overlays_two_jobs(tab: Tab, service: Service, client: httpx.Client) -> None:
    ids = [submit(client, mlp_job(seed=seed)) for seed in (1, 2)]
    for job_id in ids:
        assert wait_final(client, job_id)["status"] == "succeeded"
    page = tab.open(f"#/compare?ids={','.join(ids)}", service.keys["alice"])
    page.wait_for_function("() => Number(document.querySelector('#compare-loss')?.dataset.points) > 0")
    assert page.get_attribute("#compare-loss", "data-series") == "2"
    assert tab.points("#compare-loss") == 40  # 20 steps each, drawn in full
    assert page.locator("#compare-runs tbody tr").count() == 2
    page.select_option("#compare-x", "time")
    page.wait_for_function("() => location.hash.includes('x=time')")
    page.wait_for_function("() => Number(document.querySelector('#compare-loss')?.dataset.points) === 40")
    tab.shot("compare")


def test_a_sweeps_trials_curves_and_best_are_shown(tab: Tab, service: Service, client: httpx.Client) -> None:
    from api.routes.sweeps import EXAMPLE

    template = {**EXAMPLE["template"], "epochs": 3, "batch_size": 64, "capture": {"graph": False}}
    space = {"optimizer.lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True}}
    body = {"name": "ui", "template": template, "space": space, "max_trials": 3, "pruner": {"type": "none"}}
    sweep_id = client.post("/v1/sweeps", json=body).json()["id"]
    page = tab.open(f"#/sweeps/{sweep_id}", service.keys["alice"])
    # the page follows the sweep to its end without a reload
    page.wait_for_selector('#sweep-status .badge[data-status="succeeded"]')
    page.wait_for_function("() => Number(document.querySelector('#chart-trials')?.dataset.points) === 3")
    doc = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert page.locator('#trials tbody tr .badge[data-status="complete"]').count() == 3
    assert page.get_attribute("tr.best", "data-trial") == str(doc["best"]["number"])
    page.wait_for_function("() => Number(document.querySelector('#chart-sweep-epochs')?.dataset.points) === 9")
    assert page.get_attribute("#chart-sweep-epochs", "data-series") == "3"  # one curve per trial, 3 epochs each
    assert page.is_hidden("#sweep-cancel")
    href = page.get_attribute("#sweep-compare", "href") or ""
    assert sorted(href.split("ids=")[1].split(",")) == sorted(t["job_id"] for t in doc["trials"])
    page.wait_for_selector('#sweep-importances [data-param="optimizer.lr"]')
    tab.shot("sweep")
    page.goto(f"{service.url}/ui/#/sweeps")
    page.wait_for_selector(f'tr[data-sweep-id="{sweep_id}"] .badge[data-status="succeeded"]')
    shown = float(page.inner_text(f'tr[data-sweep-id="{sweep_id}"] .best'))
    assert shown == pytest.approx(doc["best"]["value"], abs=1e-4)


def test_another_tenants_job_is_not_reachable(tab: Tab, service: Service, client: httpx.Client) -> None:
    job_id = submit(client, mlp_job())
    page = tab.open(f"#/jobs/{job_id}", service.keys["bob"])
    page.wait_for_selector("#view-error")
    assert "404" in page.inner_text("#view-error") and "not found" in page.inner_text("#view-error")
    assert page.locator(".chart").count() == 0
    page.goto(f"{service.url}/ui/#/jobs")
    page.wait_for_selector("#jobs-body tr")
    assert page.locator(f'tr[data-job-id="{job_id}"]').count() == 0


def test_session_page(tab: Tab, service: Service, client: httpx.Client) -> None:
    from tests.integration.jobs_helpers import MLP

    sid = client.post("/v1/sessions", json={"network": MLP, "seed": 0, "device": "cpu"}).json()["id"]
    assert client.post(f"/v1/sessions/{sid}/forward", json={"input": {"randn": [4, 6], "seed": 1}}).status_code == 200
    loss = client.post(
        f"/v1/sessions/{sid}/loss", json={"criterion": {"type": "MSELoss"}, "target": {"randn": [4, 3], "seed": 2}}
    )
    assert loss.status_code == 200, loss.text
    assert client.post(f"/v1/sessions/{sid}/backward", json={}).status_code == 200
    grad = client.get(f"/v1/sessions/{sid}/parameters/fc2.bias").json()["grad"]

    page = tab.open(f"#/sessions/{sid}", service.keys["alice"])
    page.wait_for_selector('#session-last [data-root="loss"]')
    page.wait_for_selector('#session-last [data-root="output"]')
    assert "in_features=6, out_features=16" in page.inner_text("#session-repr")
    assert "MseLossBackward0" in page.inner_text('#session-last [data-root="loss"]')
    assert "AddmmBackward0" in page.inner_text('#session-last [data-root="output"]')
    page.wait_for_selector('tr[data-param="fc2.bias"] .grad-norm')
    shown = float(page.inner_text('tr[data-param="fc2.bias"] .grad-norm'))
    assert shown == pytest.approx(sum(g * g for g in grad) ** 0.5, rel=1e-3)
    assert page.locator("#session-params tbody tr").count() == 4
    page.wait_for_selector("#graph svg, #graph-message")
    tab.shot("session")


def test_sessions_page_lists_the_tenants_sessions(
    tab: Tab, service: Service, client: httpx.Client, client_bob: httpx.Client
) -> None:
    from tests.integration.jobs_helpers import MLP

    mine = [client.post("/v1/sessions", json={"network": MLP, "seed": s, "device": "cpu"}).json()["id"] for s in (0, 1)]
    assert (
        client.post(f"/v1/sessions/{mine[1]}/forward", json={"input": {"randn": [2, 6], "seed": 1}}).status_code == 200
    )
    theirs = client_bob.post("/v1/sessions", json={"network": MLP, "seed": 0, "device": "cpu"}).json()["id"]
    page = tab.open("#/sessions", service.keys["alice"])
    page.wait_for_selector(f'tr[data-session-id="{mine[0]}"]')
    listed = page.eval_on_selector_all(
        "#sessions-body tr[data-session-id]", "rows => rows.map((r) => r.dataset.sessionId)"
    )
    assert listed.index(mine[1]) < listed.index(mine[0])  # newest first, as GET /v1/sessions
    assert theirs not in listed
    row = f'tr[data-session-id="{mine[1]}"]'
    assert "MLP" in page.inner_text(row) and "cpu" in page.inner_text(row)
    assert page.inner_text(f"{row} .version") == str(client.get(f"/v1/sessions/{mine[1]}").json()["version"])
    tab.shot("sessions")
    page.click(f'tr[data-session-id="{mine[0]}"] button.delete')
    page.wait_for_selector(f'tr[data-session-id="{mine[0]}"]', state="detached")
    assert client.get(f"/v1/sessions/{mine[0]}").status_code == 404
    page.click(f"{row} a")
    page.wait_for_selector("#session-repr")
    assert page.url.endswith(f"#/sessions/{mine[1]}")


def test_docs_work_offline_with_examples(tab: Tab) -> None:
    page = tab.page
    page.goto(f"{tab.service.url}/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    assert page.locator(".swagger-ui .opblock").count() > 20
    page.click("#operations-sessions-forward_v1_sessions__session_id__forward_post .opblock-summary")
    page.wait_for_selector("#operations-sessions-forward_v1_sessions__session_id__forward_post .examples-select")
    tab.shot("docs")
