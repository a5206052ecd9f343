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

# Every tick label of every chart on the page whose text runs past the room its axis has on the canvas: a
# y axis on the left draws its labels right-aligned before the ticks, so a label wider than the axis's size
# less its ticks and gap loses its first digits off the canvas's edge.
AXES_CLIPPED = """() => {
  const clipped = [];
  for (const chart of Chart.live) {
    const u = chart.plot;
    const ctx = document.createElement('canvas').getContext('2d');
    u.axes.forEach((axis, i) => {
      if (!axis.show || !axis._values || axis.side % 2 === 0) return;
      ctx.font = axis.font[0];
      const room = axis._pos - axis.ticks.size - axis.gap;  // from the canvas's left edge to the ticks
      for (const text of axis._values) {
        const width = ctx.measureText(text).width / devicePixelRatio;
        if (width > room) clipped.push(`${chart.box.id} axis ${i}: "${text}" is ${width.toFixed(1)} px in ${room} px`);
      }
    });
  }
  return clipped;
}"""

# Charts whose canvas has ink in its first two columns of pixels: a label that ran off the edge.
INK_AT_LEFT_EDGE = """() => [...Chart.live].filter((chart) => {
  const canvas = chart.plot.ctx.canvas;
  const column = chart.plot.ctx.getImageData(0, 0, 2, canvas.height).data;
  for (let i = 3; i < column.length; i += 4) if (column[i] > 0) return true;
  return false;
}).map((chart) => chart.box.id)"""


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


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(mlp_job(batch_size=40, steps=60), id="fast"),  # samples/s in the tens of thousands
        pytest.param(
            mlp_job(optimizer={"type": "SGD", "lr": 1e4}, steps=50), id="failed"
        ),  # lr 10,000, loss in the trillions
    ],
)
def test_chart_axes_show_whole_labels(tab: Tab, service: Service, client: httpx.Client, body: dict[str, Any]) -> None:
    job = wait_final(client, submit(client, body))
    count = client.get(f"/v1/jobs/{job['id']}/metrics").json()["count"]
    page = tab.open(f"#/jobs/{job['id']}", service.keys["alice"])
    for chart in ("#chart-loss", "#chart-lr", "#chart-throughput"):
        page.wait_for_function(
            "([sel, n]) => Number(document.querySelector(sel)?.dataset.points) === n", arg=[chart, count]
        )
    tab.frames()  # the draw that follows the last data
    tab.shot(f"job-axes-{job['status']}")
    labels = page.evaluate("() => [...Chart.live].map((c) => c.plot.axes[1]._values || []).flat()")
    assert len(labels) > 8, labels  # the measure below looked at drawn labels
    assert page.evaluate(AXES_CLIPPED) == []
    assert page.evaluate(INK_AT_LEFT_EDGE) == []  # and on the pixels themselves


# For each curve of a chart: its points, and whether the canvas holds its colour within 3 px of each point.
INK_AT_POINTS = """sel => {
  const chart = [...Chart.live].find((c) => c.box.id === sel.slice(1));
  const u = chart.plot;
  const near = (x, y, [r, g, b]) => {
    const px = u.ctx.getImageData(Math.round(x) - 3, Math.round(y) - 3, 7, 7).data;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i + 3] > 128 && Math.abs(px[i] - r) + Math.abs(px[i + 1] - g) + Math.abs(px[i + 2] - b) < 60) return true;
    }
    return false;
  };
  return u.series.slice(1).map((s, k) => {
    const rgb = COLORS[k % COLORS.length].match(/\\w\\w/g).map((h) => parseInt(h, 16));
    const points = u.data[0].map((x, i) => [x, u.data[k + 1][i]]).filter(([, y]) => y !== null && y !== undefined);
    const drawn = points.map(([x, y]) => near(u.valToPos(x, "x", true), u.valToPos(y, "y", true), rgb));
    return { label: s.label, points: points.length, drawn };
  });
}"""


def test_a_curve_of_one_point_is_drawn(tab: Tab, service: Service, one_epoch_sweep: dict[str, Any]) -> None:
    sweep = one_epoch_sweep  # every trial reported epoch 1 only, as a trial the pruner stops at epoch 1
    page = tab.open(f"#/sweeps/{sweep['id']}", service.keys["alice"])
    page.wait_for_function("() => Number(document.querySelector('#chart-sweep-epochs')?.dataset.points) === 2")
    tab.frames()  # the draw that follows the data
    tab.shot("sweep-one-epoch")
    curves = page.evaluate(INK_AT_POINTS, "#chart-sweep-epochs")
    assert [c["points"] for c in curves] == [1, 1], curves
    assert all(all(c["drawn"]) for c in curves), curves
