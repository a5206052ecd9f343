"""The dashboard fits a 1400 px wide window: tables show every column, chart axes show every digit of their
labels, and a curve of one point is still drawn. Measured in Chromium on the pages' own elements and canvases."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Service
from tests.integration.browser_tab import Tab, browser, tab
from tests.integration.jobs_helpers import mlp_job, submit, wait_final, wait_for

pytestmark = pytest.mark.integration
__all__ = ["browser", "tab"]  # fixtures, used by name

# Each cell whose text is cut (wider than its box) and how far a table runs past the box that holds it.
TABLE_FIT = """sel => {
  const table = document.querySelector(sel);
  const holder = table.parentElement;
  const cut = [...table.querySelectorAll('td, th')].filter((c) => c.scrollWidth > c.clientWidth + 1)
    .map((c) => c.textContent);
  return { over: holder.scrollWidth - holder.clientWidth, right: table.getBoundingClientRect().right,
           window: document.documentElement.clientWidth, cut };
}"""


def test_jobs_table_fits_1400_px(tab: Tab, service: Service, client: httpx.Client) -> None:
    name = "lenet-digits-sgd-momentum-0.9-lr-0.01-batch-32-baseline"  # a name as people write them
    job_id = submit(client, mlp_job(name=name))
    assert wait_final(client, job_id)["status"] == "succeeded"
    page = tab.open("#/jobs", service.keys["alice"])
    page.wait_for_selector(f'tr[data-job-id="{job_id}"] .badge[data-status="succeeded"]')
    fit = page.evaluate(TABLE_FIT, "#jobs")
    tab.shot("jobs-1400")
    assert fit["over"] <= 0 and fit["right"] <= fit["window"], fit
    assert fit["cut"] == [], fit
    row = page.locator(f'tr[data-job-id="{job_id}"] td')
    worker, age = row.nth(8), row.nth(9)  # the columns the issue found cut and hidden
    assert worker.inner_text() != "—" and worker.is_visible() and age.inner_text().endswith("s")
    assert (age.bounding_box() or {"x": 1e9})["x"] < fit["window"]


@pytest.fixture(scope="module")
def one_epoch_sweep(service: Service) -> dict[str, Any]:
    """A finished sweep over four parameters whose trials ran one epoch each: long params, one point per curve."""
    from api.routes.sweeps import EXAMPLE

    template = {**EXAMPLE["template"], "epochs": 1, "batch_size": 64, "capture": {"graph": False}}
    space = {
        "optimizer.lr": {"type": "float", "low": 0.01, "high": 0.5, "log": True},
        "optimizer.momentum": {"type": "float", "low": 0.0, "high": 0.9},
        "network.layers.1.out_features": {"type": "int", "low": 16, "high": 128, "log": True},
        "optimizer.weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    }
    body = {"template": template, "space": space, "max_trials": 2, "pruner": {"type": "none"}}
    with service.client() as client:
        answer = client.post("/v1/sweeps", json=body)
        assert answer.status_code == 202, answer.text
        return wait_for(client, f"/v1/sweeps/{answer.json()['id']}", lambda d: d["status"] != "running", 300)


def test_sweep_trials_table_fits_1400_px(tab: Tab, service: Service, one_epoch_sweep: dict[str, Any]) -> None:
    sweep = one_epoch_sweep
    assert sweep["status"] == "succeeded", sweep
    page = tab.open(f"#/sweeps/{sweep['id']}", service.keys["alice"])
    page.wait_for_selector('#trials tbody tr .badge[data-status="complete"]')
    fit = page.evaluate(TABLE_FIT, "#trials")
    tab.shot("sweep-1400")
    assert fit["over"] <= 0 and fit["right"] <= fit["window"], fit
    assert fit["cut"] == [], fit
    for trial in sweep["trials"]:
        link = page.locator(f'#trials tr[data-trial="{trial["number"]}"] a')
        assert link.inner_text() == trial["job_id"]
        assert (link.bounding_box() or {"x": 1e9})["x"] + 10 < fit["window"]
