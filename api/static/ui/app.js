// gradserve dashboard: one page, routed by the URL's #fragment. Data comes from the /v1 API with the
// key kept in sessionStorage; live curves come from the job's server-sent event stream (read with fetch,
// since EventSource cannot send an Authorization header). Every chart carries data-points (its point count).
"use strict";

const KEY = "gradserve.key";
// A job's states come from the API: the service writes gradserve.protocol's states (GET /protocol) into the page.
const PROTOCOL = JSON.parse(document.getElementById("protocol").textContent);
const JOB_STATES = PROTOCOL.states.job.states;
const FINAL = new Set(PROTOCOL.states.job.terminal);
const STOPPED = new Set(PROTOCOL.states.job.stopped);  // nothing runs until someone acts: a paused job is resumed or cancelled
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
  "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"];

// ---------- activations of a step, replayed by the service ----------
function activationsPanel(id, doc) {
  const named = ((doc.request || {}).network || {}).layers || [];
  const layers = h("input", { id: "acts-layers", size: 40, value: named.filter((l) => l.name).map((l) => l.name).join(",") });
  const step = h("input", { id: "acts-step", type: "number", min: "1", placeholder: "step" });
  const out = h("div", { id: "acts-result" });
  const show = async (at) => {
    step.value = String(at);
    out.replaceChildren(h("span", { class: "muted", text: `replaying step ${at}…` }));
    const q = new URLSearchParams({ step: String(at), layers: layers.value, bins: "24" });
    const got = await api.json(`/v1/jobs/${encodeURIComponent(id)}/activations?${q}`);
    const row = (name, kind, st) => h("tr", {}, h("td", { text: name }), h("td", { text: kind }),
      ...["mean", "std", "min", "max"].map((k) => h("td", { class: "num", text: st ? fmt(st[k]) : "—" })),
      h("td", {}, histogram(st && st.histogram)));
    out.replaceChildren(h("div", { text: `step ${at}: loss ${fmt(got.loss)}` }), h("table", { class: "acts" },
      h("tr", {}, ...["layer", "", "mean", "std", "min", "max", "histogram"].map((t) => h("th", { text: t }))),
      ...Object.entries(got.layers).flatMap(([name, l]) => [row(`${name} [${l.shape.join(", ")}]`, "output", l.output),
        row("", "gradient", l.grad)])));
  };
  const box = h("div", { id: "activations" }, h("div", { class: "toolbar" }, "step ", step, " layers ", layers,
    h("button", { id: "acts-show", onclick: () => step.value && show(Number(step.value)).catch(showError) }, "Show")), out);
  return { box, show: (at) => show(at).catch(showError) };
}

function histogram(hist) {
  if (!hist) return h("span", { class: "muted", text: "—" });
  const top = Math.max(...hist.counts, 1);
  return h("span", { class: "hist", title: `${fmt(hist.min)} … ${fmt(hist.max)}` },
    ...hist.counts.map((c) => h("i", { style: `height:${Math.round(20 * c / top)}px` })));
}

// ---------- small helpers ----------
// How a job's steps run, where it differs from plain fp32 steps: the job page shows these beside its facts.
function trainingFacts(t) {
  if (!t) return [];
  const out = [];
  if (t.precision && t.precision !== "32") out.push(["precision", t.precision]);
  if (t.accumulate_grad_batches > 1) out.push(["accumulation", `${t.accumulate_grad_batches} batches a step`]);
  if (t.clip_grad_norm) out.push(["clip norm", t.clip_grad_norm]);
  if (t.channels_last) out.push(["memory", "channels-last"]);
  if (t.compile) out.push(["compiled", "yes"]);
  return out;
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}
const num = (v) => (typeof v === "number" ? v : v === null || v === undefined ? null : Number(v));
const finite = (v) => { const n = num(v); return n !== null && Number.isFinite(n) ? n : null; };
function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "—";
  const n = num(v);
  if (!Number.isFinite(n)) return String(v);
  if (Number.isInteger(n) && Math.abs(n) < 1e6) return String(n);
  return Math.abs(n) >= 1e4 || (Math.abs(n) < 1e-3 && n !== 0) ? n.toExponential(3) : n.toFixed(digits);
}
function age(unix) {
  if (!unix) return "—";
  const s = Math.max(0, Date.now() / 1000 - unix);
  return s < 60 ? `${Math.round(s)} s` : s < 3600 ? `${Math.round(s / 60)} min` : s < 86400 ? `${(s / 3600).toFixed(1)} h` : `${(s / 86400).toFixed(1)} d`;
}
function badge(status) { return h("span", { class: `badge ${status}`, "data-status": status, text: status }); }
function progress(doc) {
  const total = doc.total_steps || 0;
  const pct = total ? Math.min(100, (100 * (doc.step || 0)) / total) : 0;
  const bar = h("span", { class: "bar" }, h("span", { style: `width:${pct}%` }));
  return h("span", { class: "progress", "data-step": doc.step || 0 }, bar, `${doc.step || 0}/${total || "?"}`);
}

// ---------- the API ----------
class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
  static async of(response) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : (body.detail || []).map((d) => d.msg).join("; ");
    } catch (_) { /* not JSON */ }
    return new ApiError(response.status, detail);
  }
}
// Every request a page makes is tied to the route that made it: leaving the route aborts them, so an answer
// meant for a page already gone (a 401 sent before the key was saved, a slow list) never lands on the next.
let routeControl = new AbortController();
const isAbort = (err) => err instanceof DOMException && err.name === "AbortError";
const api = {
  headers() { const k = sessionStorage.getItem(KEY); return k ? { Authorization: `Bearer ${k}` } : {}; },
  async fetch(path, init = {}) {
    const signal = init.signal ? AbortSignal.any([init.signal, routeControl.signal]) : routeControl.signal;
    const response = await fetch(path, { ...init, signal, headers: { ...this.headers(), ...(init.headers || {}) } });
    if (!response.ok) throw await ApiError.of(response);
    return response;
  },
  async json(path, init) { return (await this.fetch(path, init)).json(); },
  async text(path, init) { return (await this.fetch(path, init)).text(); },
};
async function download(path, filename) {
  const blob = await (await api.fetch(path)).blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// Server-sent events over fetch: calls onEvent({id, event, data}) for each; resumes with Last-Event-ID
// when the connection drops before the job ends. Returns a function that stops it.
function streamEvents(path, onEvent, isDone) {
  const control = new AbortController();
  let lastId = null;
  (async () => {
    while (!control.signal.aborted) {
      try {
        const headers = lastId ? { "Last-Event-ID": lastId } : {};
        const response = await api.fetch(path, { headers, signal: control.signal });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const ev = {};
            for (const line of block.split("\n")) {
              if (!line || line.startsWith(":")) continue;
              const i = line.indexOf(":");
              const name = i < 0 ? line : line.slice(0, i);
              ev[name] = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            }
            if (ev.id) lastId = ev.id;
            if (ev.data !== undefined && ev.event) onEvent(ev);
          }
        }
        if (isDone()) return;
      } catch (err) {
        if (control.signal.aborted || isAbort(err)) return;
        // a refusal (401, 404) is final; an outage (503 with Retry-After) or a busy service is worth waiting out
        if (err instanceof ApiError && err.status < 500 && err.status !== 429) { showError(err); return; }
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return () => control.abort();
}

// ---------- charts ----------
// Tick labels with as many decimals as the tick spacing needs (uPlot's default keeps 3, so an lr of 3e-4 read
// "0"), and powers of ten beyond what a short label can hold (a diverged loss of 1e30 had 31 digits).
function tickLabels(u, splits, axisIdx, space, incr) {
  const shown = splits.filter((v) => v !== null && Number.isFinite(v));
  const big = Math.max(0, ...shown.map(Math.abs));
  const step = Math.abs(incr) || big || 1;
  const exp = big >= 1e6 || (big > 0 && big < 1e-3);
  const label = (v, d) => (!exp ? v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d })
    : v === 0 ? "0" : v.toExponential(d).replace("e+", "e"));
  // the fewest digits that still give each tick's own value (0.025 steps need three: 0.075, not 0.08)
  let d = 0;
  while (d < 8 && !shown.every((v) => Math.abs(Number(label(v, d).replaceAll(",", "")) - v) <= step * 1e-6)) d += 1;
  return splits.map((v) => (v === null ? "" : label(v, d)));
}
// A series of a single value (a trial pruned at its first epoch, a job at step 1) has no line to draw: mark it.
function alone(u, seriesIdx) {
  let seen = 0;
  for (const v of u.data[seriesIdx]) if (v !== null && v !== undefined && ++seen > 1) return false;
  return seen === 1;
}
// A y axis as wide as its widest label (uPlot's fixed 50 px cut "10,000" samples/s to "0,000"). uPlot asks
// again after each layout pass, whose new width may bring new labels; never narrower within one layout, so
// it settles.
function axisWidth(u, values, axisIdx, cycle) {
  const axis = u.axes[axisIdx];
  u.ctx.font = axis.font[0];
  const widest = Math.max(0, ...(values || []).map((v) => u.ctx.measureText(v).width / devicePixelRatio));
  return Math.max(Math.ceil(axis.ticks.size + axis.gap + widest + 2), cycle > 1 ? axis._size : 0);
}
// A uPlot chart that redraws at most once per animation frame however fast data arrives.
class Chart {
  static live = new Set();  // the charts on the page, for tools that measure drawing (bench/ui_compare.py)
  constructor(container, { id, title, series, xLabel = "step", xTime = false, xWhole = false }) {
    Chart.live.add(this);
    this.box = h("div", { class: "chart", id, "data-points": "0", "data-series": String(series.length) }, h("h3", { text: title }));
    container.append(this.box);
    this.data = [[], ...series.map(() => [])];
    this.points = 0;
    const opts = {
      width: Math.max(300, this.box.clientWidth - 16 || 500), height: 220,
      scales: { x: { time: xTime } },
      // trial numbers and epochs are whole: ticks at whole steps only
      axes: [{ label: xLabel, ...(xWhole ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] } : {}) },
        { values: tickLabels, size: axisWidth }],
      series: [{ label: xLabel }, ...series.map((s, i) => ({ label: s.label, stroke: s.color || COLORS[i % COLORS.length],
        width: 1.5, spanGaps: true, points: { show: s.points || alone }, ...(s.line === false ? { paths: () => null } : {}) }))],
      legend: { live: true },
      // Fixed, so a layout settles in uPlot's three passes: with padding that follows the labels it could still
      // be moving on the last pass and keep the y axis at its old width. Room on the left for the first x label
      // of a chart with no y axis yet.
      padding: [10, 20, 0, 12],
    };
    this.plot = new uPlot(opts, this.data, this.box);
    // Follow the box, not the window: a chart placed first in a grid is sized before its neighbours arrive.
    this.width = 0;
    this.observer = new ResizeObserver(() => {
      const width = Math.max(300, this.box.clientWidth - 16);
      if (width !== this.width) { this.width = width; this.plot.setSize({ width, height: 220 }); }
    });
    this.observer.observe(this.box);
    this.pending = false;
  }
  set(data, points) { this.data = data; this.points = points; this.schedule(); }
  schedule() {
    if (this.pending) return;
    this.pending = true;
    // at most ~6 redraws a second: a fast job sends hundreds of records a second, and drawing each costs CPU
    setTimeout(() => requestAnimationFrame(() => {
      this.pending = false;
      this.plot.setData(this.data);
      this.box.setAttribute("data-points", String(this.points));
    }), 150);
  }
  destroy() { Chart.live.delete(this); this.observer.disconnect(); this.plot.destroy(); }
}

// ---------- shell: key, errors, routing ----------
const view = () => document.getElementById("view");
let disposers = [];
function onDispose(fn) { disposers.push(fn); }
function showError(err) {
  if (isAbort(err)) return;  // its page is gone: nothing to tell
  const box = document.getElementById("auth-error");
  if (err instanceof ApiError && err.status === 401) {
    view().replaceChildren();  // a refused key shows no data at all
    box.textContent = `The API refused the key (401): ${err.message}. Enter a valid API key above.`;
    box.hidden = false;
    document.getElementById("key-input").focus();
    return;
  }
  view().replaceChildren(h("div", { class: "error-box", id: "view-error" },
    err instanceof ApiError ? `${err.status}: ${err.message}` : String(err)));
}
function route() {
  for (const fn of disposers) { try { fn(); } catch (_) { /* already gone */ } }
  disposers = [];
  routeControl.abort();
  routeControl = new AbortController();
  document.getElementById("auth-error").hidden = true;
  const [path, query] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  view().replaceChildren();
  let page;
  if (parts[0] === "jobs" && parts[1]) page = jobPage(decodeURIComponent(parts[1]));
  else if (parts[0] === "compare") page = comparePage((params.get("ids") || "").split(",").filter(Boolean), params.get("x") || "step", Number(params.get("points")) || 0);
  else if (parts[0] === "sweeps" && parts[1]) page = sweepPage(decodeURIComponent(parts[1]));
  else if (parts[0] === "sweeps") page = sweepsList();
  else if (parts[0] === "sessions" && parts[1]) page = sessionPage(decodeURIComponent(parts[1]));
  else if (parts[0] === "sessions") page = sessionsList();
  else page = jobsList(params.get("status") || "");
  Promise.resolve(page).catch(showError);
}
document.getElementById("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = document.getElementById("key-input").value.trim();
  if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
  document.getElementById("key-input").value = "";
  route();
});
document.getElementById("key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); route(); });
window.addEventListener("hashchange", route);

// ---------- jobs list ----------
async function jobsList(status) {
  const selected = new Set();
  const filter = h("select", { id: "status-filter", onchange: (e) => { location.hash = `#/jobs${e.target.value ? `?status=${e.target.value}` : ""}`; } },
    ...["", ...JOB_STATES].map((s) => h("option", { value: s, selected: s === status, text: s || "all statuses" })));
  const compare = h("button", { id: "compare-selected", class: "primary", disabled: true,
    onclick: () => { location.hash = `#/compare?ids=${[...selected].join(",")}`; } }, "Compare selected");
  const body = h("tbody", { id: "jobs-body" });
  const table = h("table", { id: "jobs" }, h("thead", {}, h("tr", {},
    ...["", "job", "status", "name / network", "progress", "loss", "val acc", "device", "worker", "age", ""].map((t) => h("th", { text: t })))), body);
  view().append(h("h1", { text: "Jobs" }), h("div", { class: "toolbar" }, filter, compare), h("div", { class: "table-wrap" }, table));
  let timer = null;
  let alive = true;
  onDispose(() => { alive = false; clearTimeout(timer); });
  const render = (jobs) => {
    body.replaceChildren(...jobs.map((j) => {
      const box = h("input", { type: "checkbox", class: "select", checked: selected.has(j.id),
        onchange: (e) => { e.target.checked ? selected.add(j.id) : selected.delete(j.id); compare.disabled = selected.size < 1; compare.textContent = `Compare selected (${selected.size})`; } });
      const cancel = FINAL.has(j.status) ? "" : h("button", { class: "danger cancel", onclick: async () => {
        try { await api.json(`/v1/jobs/${j.id}/cancel`, { method: "POST" }); await refresh(); } catch (err) { showError(err); } } }, "Cancel");
      return h("tr", { "data-job-id": j.id },
        h("td", {}, box), h("td", {}, h("a", { href: `#/jobs/${j.id}`, text: j.id })), h("td", {}, badge(j.status)),
        h("td", { class: "wrap", text: j.name || j.network_id || "—" }), h("td", {}, progress(j)),
        h("td", { class: "num loss", text: fmt(j.loss) }), h("td", { class: "num", text: fmt(j.val_accuracy, 3) }),
        h("td", { text: j.device_used || j.device || "—" }), h("td", { class: "wrap", text: j.worker || "—" }),
        h("td", { text: age(j.created_at) }), h("td", {}, cancel));
    }));
    if (!jobs.length) body.append(h("tr", {}, h("td", { colspan: 11, class: "muted", text: "No jobs." })));
  };
  // The list has no event stream of its own: it re-reads one page while any job on it is still moving.
  const refresh = async () => {
    const page = await api.json(`/v1/jobs?limit=100${status ? `&status=${status}` : ""}`);
    if (!alive) return;
    render(page.data);
    clearTimeout(timer);
    const moving = page.data.some((j) => !FINAL.has(j.status));
    timer = setTimeout(() => refresh().catch(showError), moving ? 1000 : 5000);
  };
  await refresh();
}

// ---------- a job ----------
const NO_GRAPH = "No graph captured: submit the job with capture.graph true.";
async function jobPage(id) {
  const doc = await api.json(`/v1/jobs/${encodeURIComponent(id)}`);
  const root = view();
  const status = h("span", { id: "job-status" }, badge(doc.status));
  const prog = h("span", { id: "job-progress" }, progress(doc));
  const lossNow = h("b", { id: "job-loss", text: fmt(doc.loss) });
  const errorBox = h("div", { class: "error-box", id: "job-error", hidden: true });
  const cancel = h("button", { class: "danger", id: "job-cancel", hidden: FINAL.has(doc.status),
    onclick: () => api.json(`/v1/jobs/${id}/cancel`, { method: "POST" }).catch(showError) }, "Cancel");
  const tb = h("button", { id: "job-tensorboard", onclick: () => download(`/v1/jobs/${id}/tensorboard`, `${id}-tensorboard.tar.gz`).catch(showError) }, "TensorBoard export");
  const facts = h("div", { class: "facts" });
  const pausedText = h("span", { id: "job-paused-text" });
  const resumeLr = h("input", { id: "job-resume-lr", type: "number", step: "any", min: "0", placeholder: "lr (unchanged)" });
  const resume = (changes) => api.json(`/v1/jobs/${id}/resume`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ changes }) }).then(route).catch(showError);
  const pausedBox = h("div", { class: "error-box", id: "job-paused", hidden: true }, pausedText, " ",
    h("button", { id: "job-resume", onclick: () => resume(resumeLr.value ? { lr: Number(resumeLr.value) } : {}) }, "Resume"), " at ", resumeLr, " ",
    h("button", { id: "job-skip", onclick: () => resume({ skip_batch: true }) }, "Skip the batch and resume"), " ",
    h("button", { id: "job-open-session", onclick: () => api.json(`/v1/jobs/${id}/sessions`, { method: "POST",
      headers: { "Content-Type": "application/json" }, body: "{}" })
      .then((sess) => { location.hash = `#/sessions/${encodeURIComponent(sess.id)}`; }).catch(showError) }, "Open in a session"));
  root.append(h("h1", {}, `Job ${id} `, status), errorBox, pausedBox,
    h("div", { class: "toolbar" }, prog, h("span", {}, "loss ", lossNow), cancel, tb, h("a", { href: `#/compare?ids=${id}` }, "compare…")), facts);
  const charts = h("div", { class: "charts" });
  root.append(charts);
  const loss = new Chart(charts, { id: "chart-loss", title: "loss (train per step, held-out at epoch ends)",
    series: [{ label: "train loss" }, { label: "held-out loss", points: true }] });
  const acc = new Chart(charts, { id: "chart-accuracy", title: "accuracy", series: [{ label: "train accuracy" }, { label: "held-out accuracy", points: true }] });
  const lr = new Chart(charts, { id: "chart-lr", title: "learning rate", series: [{ label: "lr" }] });
  const speed = new Chart(charts, { id: "chart-throughput", title: "samples/s", series: [{ label: "samples/s" }] });
  onDispose(() => [loss, acc, lr, speed].forEach((c) => c.destroy()));
  const gradBox = h("div", { id: "gradients" });
  const graphBox = h("div", { class: "graph", id: "graph" }, h("span", { class: "muted", text: "loading…" }));
  const ckptBox = h("div", { id: "checkpoints" });
  const request = h("pre", { id: "job-request", text: JSON.stringify(doc.request || {}, null, 2) });
  const acts = activationsPanel(id, doc);
  loss.plot.over.addEventListener("click", () => {  // pick a step on the loss curve: its activations
    const idx = loss.plot.cursor.idx;
    if (idx !== null && idx !== undefined && loss.data[0][idx] !== undefined) acts.show(loss.data[0][idx]);
  });
  root.append(h("h2", { text: "Activations and their gradients (click a step on the loss curve)" }), acts.box);
  root.append(h("h2", { text: "Gradients (captured steps)" }), gradBox, h("h2", { text: "Autograd graph (step 1)" }), graphBox,
    h("h2", { text: "Checkpoints" }), ckptBox, h("h2", { text: "Request" }), request);

  const cols = { step: [], loss: [], accuracy: [], lr: [], sps: [], vstep: [], vloss: [], vacc: [] };
  let accCount = 0;
  let state = doc;
  const showFacts = (d) => {
    const rate = finite(d.samples_per_s);
    facts.replaceChildren(...[["device", d.device_used || d.device], ["worker", d.worker],
      ["processes", d.world_size], ["epoch", d.epoch],
      ["samples/s", rate === null ? null : Math.round(rate).toLocaleString("en-US")],
      ["overall samples/s", finite(d.overall_samples_per_s) === null ? null : Math.round(d.overall_samples_per_s).toLocaleString("en-US")],
      ["held-out acc", fmt(d.val_accuracy, 3)],
      ["created", age(d.created_at) + " ago"], ["attempt", d.attempt], ...trainingFacts(d.training)]
      .map(([k, v]) => h("span", {}, `${k} `, h("b", { text: v === null || v === undefined ? "—" : String(v) }))));
  };
  const showDoc = (d) => {
    state = d;
    status.replaceChildren(badge(d.status));
    prog.replaceChildren(progress(d));
    lossNow.textContent = fmt(d.loss);
    cancel.hidden = FINAL.has(d.status);
    errorBox.hidden = !d.error;
    errorBox.textContent = d.error ? `Job ${d.status}: ${d.error}` : "";
    const bp = d.status === "paused" ? d.breakpoint : null;
    pausedBox.hidden = !bp;
    pausedText.textContent = bp ? `Paused before step ${bp.step}'s update: ${bp.rule} ${typeof bp.value === "number" ? fmt(bp.value) : bp.value}`
      + (bp.parameter ? ` (first non-finite gradient: ${bp.parameter})` : "") + "." : "";
    showFacts(d);
  };
  showDoc(doc);
  // The facts follow the metric stream (epoch, samples/s, held-out accuracy) a few times a second however fast
  // records arrive, and the age counts on by itself.
  let factsTimer = null;
  const factsSoon = () => { factsTimer = factsTimer || setTimeout(() => { factsTimer = null; showFacts(state); }, 250); };
  const ticker = setInterval(() => showFacts(state), 1000);
  onDispose(() => { clearTimeout(factsTimer); clearInterval(ticker); });
  const redraw = () => {
    const n = cols.step.length;
    // held-out values sit on the train steps they were measured at, as a second series with gaps elsewhere
    const at = new Map(cols.vstep.map((s, i) => [s, i]));
    const vl = cols.step.map((s) => (at.has(s) ? cols.vloss[at.get(s)] : null));
    const va = cols.step.map((s) => (at.has(s) ? cols.vacc[at.get(s)] : null));
    loss.set([cols.step, cols.loss, vl], n);
    acc.set([cols.step, cols.accuracy, va], accCount);
    lr.set([cols.step, cols.lr], n);
    speed.set([cols.step, cols.sps], n);
  };
  let graphRequested = false;
  let gradTimer = null;
  const every = ((doc.request || {}).capture || {}).gradients_every || 0;
  onDispose(() => clearTimeout(gradTimer));
  const loadExtras = () => {
    loadGradients(id, gradBox).catch(showError);
    graphRequested = true;
    loadGraph(`/v1/jobs/${id}/graph?format=svg`, graphBox, NO_GRAPH).catch(showError);
    loadCheckpoints(id, state, ckptBox);
  };
  const stop = streamEvents(`/v1/jobs/${encodeURIComponent(id)}/events`, (ev) => {
    const data = JSON.parse(ev.data);
    if (ev.event === "metric") {
      cols.step.push(data.step);
      cols.loss.push(finite(data.loss));
      cols.accuracy.push(finite(data.accuracy));
      if (data.accuracy !== undefined) accCount += 1;
      cols.lr.push(finite(data.lr));
      cols.sps.push(finite(data.samples_per_s));
      if (data.val_loss !== undefined) { cols.vstep.push(data.step); cols.vloss.push(finite(data.val_loss)); cols.vacc.push(finite(data.val_accuracy)); }
      state = { ...state, step: data.step, loss: data.loss, epoch: data.epoch, samples_per_s: data.samples_per_s, val_accuracy: data.val_accuracy ?? state.val_accuracy };
      prog.replaceChildren(progress(state));
      lossNow.textContent = fmt(data.loss);
      factsSoon();
      if (every && data.step % every === 0) {  // a snapshot was just taken: show it once it is written
        clearTimeout(gradTimer);
        gradTimer = setTimeout(() => loadGradients(id, gradBox).catch(showError), 700);
      }
      if (!graphRequested) { graphRequested = true; loadGraph(`/v1/jobs/${id}/graph?format=svg`, graphBox, NO_GRAPH).catch(showError); }
      redraw();
    } else if (ev.event === "state") {
      if (STOPPED.has(data.status)) state = { ...state, status: data.status };  // the stream ends here
      api.json(`/v1/jobs/${encodeURIComponent(id)}`).then((d) => {
        showDoc(d);
        if (FINAL.has(d.status)) loadExtras();
      }).catch(showError);
    }
  }, () => STOPPED.has(state.status));
  onDispose(stop);
  gradBox.append(h("div", { class: "notice", text: every ? `Gradient statistics appear every ${every} steps.` : "No gradient snapshots: submit the job with capture.gradients_every." }));
  if (FINAL.has(doc.status)) loadExtras();
  else loadCheckpoints(id, doc, ckptBox);
}

async function loadGradients(id, box) {
  const hist = await api.json(`/v1/jobs/${id}/gradients/history`);
  if (box.chart) { box.chart.destroy(); box.chart = null; }
  box.replaceChildren();
  if (!hist.steps.length) {
    box.append(h("div", { class: "notice", id: "gradients-none", text: "No gradient snapshots: submit the job with capture.gradients_every." }));
    return;
  }
  const names = Object.keys(hist.parameters);
  const chart = new Chart(box, { id: "chart-grad-norms", title: "gradient norm per parameter", series: names.map((n) => ({ label: n, points: true })) });
  box.chart = chart;
  onDispose(() => { if (box.chart === chart) chart.destroy(); });
  chart.set([hist.steps, ...names.map((n) => hist.parameters[n].norm.map(finite))], hist.steps.length);
  const pick = h("select", { id: "grad-step" }, ...hist.steps.map((s, i) => h("option", { value: i, selected: i === hist.steps.length - 1, text: `step ${s}` })));
  const body = h("tbody");
  const fill = () => {
    const i = Number(pick.value);
    body.replaceChildren(...names.map((n) => {
      const p = hist.parameters[n];
      return h("tr", { "data-param": n }, h("td", { text: n }), h("td", { text: `[${p.shape.join(", ")}]` }),
        ...["norm", "mean", "std", "min", "max"].map((k) => h("td", { class: "num", text: fmt(p[k][i]) })));
    }));
  };
  pick.addEventListener("change", fill);
  fill();
  box.append(h("div", { class: "toolbar" }, "statistics at ", pick),
    h("table", { id: "grad-table" }, h("thead", {}, h("tr", {}, ...["parameter", "shape", "norm", "mean", "std", "min", "max"].map((t) => h("th", { text: t })))), body));
}

// The SVG comes from our own API (Graphviz's output), yet parameter names are user text: drop anything active.
function safeSvg(text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const svg = doc.documentElement;
  if (svg.nodeName !== "svg") throw new Error("the graph is not an SVG document");
  svg.querySelectorAll("script, foreignObject").forEach((n) => n.remove());
  for (const el of [svg, ...svg.querySelectorAll("*")]) {
    for (const a of [...el.attributes]) {
      if (a.name.startsWith("on") || /^\s*javascript:/i.test(a.value)) el.removeAttribute(a.name);
    }
  }
  return document.importNode(svg, true);
}
async function loadGraph(path, box, missing) {
  try {
    box.replaceChildren(safeSvg(await api.text(path)));
  } catch (err) {
    if (!(err instanceof ApiError) || err.status === 401) throw err;
    const text = err.status === 503 ? `The graph cannot be drawn here: ${err.message}` : err.status === 404 ? missing : `${err.status}: ${err.message}`;
    box.replaceChildren(h("div", { class: "notice", id: "graph-message", "data-status": String(err.status), text }));
  }
}
function loadCheckpoints(id, doc, box) {
  if (!doc.checkpoint_step && !FINAL.has(doc.status)) {
    box.replaceChildren(h("div", { class: "notice", text: "No checkpoint yet (capture.checkpoint_every sets how often)." }));
    return;
  }
  const link = h("a", { href: "#", id: "checkpoint-download", onclick: (e) => { e.preventDefault(); download(`/v1/jobs/${id}/checkpoint`, `${id}.safetensors`).catch(showError); } }, "download (safetensors)");
  box.replaceChildren(h("table", { id: "checkpoint-table" }, h("thead", {}, h("tr", {}, h("th", { text: "step" }), h("th", { text: "weights" }))),
    h("tbody", {}, h("tr", {}, h("td", { text: doc.checkpoint_step ? String(doc.checkpoint_step) : "latest" }), h("td", {}, link)))),
  h("p", { class: "muted", text: "Load with safetensors.torch.load(...) and net.load_state_dict(...)." }));
}

// ---------- compare ----------
async function comparePage(ids, xMode, pointsWanted) {
  const root = view();
  const idsInput = h("input", { id: "compare-ids", size: 60, value: ids.join(","), placeholder: "job ids, comma separated" });
  const xPick = h("select", { id: "compare-x" }, h("option", { value: "step", selected: xMode === "step", text: "by step" }), h("option", { value: "time", selected: xMode === "time", text: "by time (s)" }));
  const go = () => { location.hash = `#/compare?ids=${idsInput.value.replace(/\s+/g, "")}&x=${xPick.value}`; };
  xPick.addEventListener("change", go);
  root.append(h("h1", { text: "Compare runs" }), h("div", { class: "toolbar" }, idsInput, xPick, h("button", { class: "primary", onclick: go }, "Show")));
  if (!ids.length) { root.append(h("div", { class: "notice", text: "Select jobs in the list, or type their ids." })); return; }
  // Long series come downsampled by the server (each bucket's extremes), so 20 runs of any length draw at once.
  // (#/compare?...&points=N asks for another budget per run, e.g. 100000 to draw everything)
  const points = pointsWanted || Math.max(200, Math.min(2000, Math.floor(40000 / ids.length)));
  const runs = await Promise.all(ids.map((id) => api.json(`/v1/jobs/${encodeURIComponent(id)}/series?points=${points}`)));
  const tables = runs.map((r) => {
    const t0 = r.t.length ? r.t[0] : 0;
    const xs = xMode === "time" ? r.t.map((t) => t - t0) : r.step;
    return [xs, r.loss.map(finite)];
  });
  const charts = h("div", { class: "charts" });
  root.append(charts);
  const chart = new Chart(charts, { id: "compare-loss", title: `loss, ${runs.length} runs`, xLabel: xMode === "time" ? "seconds since first step" : "step",
    series: ids.map((id) => ({ label: id })) });
  onDispose(() => chart.destroy());
  chart.set(runs.length === 1 ? tables[0] : uPlot.join(tables), runs.reduce((a, r) => a + r.points, 0));
  root.append(h("h2", { text: "Runs" }), h("table", { id: "compare-runs" },
    h("thead", {}, h("tr", {}, ...["", "job", "steps recorded", "points drawn", "last loss"].map((t) => h("th", { text: t })))),
    h("tbody", {}, ...runs.map((r, i) => h("tr", { "data-job-id": r.id }, h("td", {}, h("span", { style: `color:${COLORS[i % COLORS.length]}`, text: "■" })),
      h("td", {}, h("a", { href: `#/jobs/${r.id}`, text: r.id })), h("td", { class: "num", text: r.count }), h("td", { class: "num", text: r.points }),
      h("td", { class: "num", text: fmt(r.loss[r.loss.length - 1]) }))))));
}

// ---------- sweeps ----------
// A sweep has no event stream: its page re-reads the sweep once a second while it runs.
function poll(ms, load) {
  let timer = null;
  let alive = true;
  onDispose(() => { alive = false; clearTimeout(timer); });
  const tick = async () => {
    const done = await load();
    if (alive && !done) timer = setTimeout(() => tick().catch(showError), ms);
  };
  return tick();
}
async function sweepsList() {
  const body = h("tbody", { id: "sweeps-body" });
  view().append(h("h1", { text: "Sweeps" }), h("table", { id: "sweeps" },
    h("thead", {}, h("tr", {}, ...["sweep", "name", "status", "trials", "objective", "best", "age"].map((t) => h("th", { text: t })))), body));
  await poll(2000, async () => {
    const page = await api.json("/v1/sweeps?limit=100");
    body.replaceChildren(...page.data.map((s) => h("tr", { "data-sweep-id": s.id },
      h("td", {}, h("a", { href: `#/sweeps/${s.id}`, text: s.id })), h("td", { text: s.name || "—" }),
      h("td", {}, badge(s.status)), h("td", { class: "num", text: `${s.trials}/${s.max_trials}` }),
      h("td", { text: `${s.objective.direction} ${s.objective.metric}` }), h("td", { class: "num best", text: fmt(s.best_value, 4) }),
      h("td", { text: age(s.created_at) }))));
    if (!page.data.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No sweeps." })));
    return !page.data.some((s) => s.status === "running");
  });
}
const MAX_CURVES = 20;  // a legend of more trials than this is unreadable
const paramsText = (params) => Object.entries(params).map(([k, v]) => `${k}=${typeof v === "number" ? fmt(v, 4) : v}`).join("  ");
async function sweepPage(id) {
  const base = `/v1/sweeps/${encodeURIComponent(id)}`;
  const first = await api.json(base);
  const root = view();
  const metric = first.objective.metric;
  const status = h("span", { id: "sweep-status" });
  const cancel = h("button", { class: "danger", id: "sweep-cancel",
    onclick: () => api.json(`${base}/cancel`, { method: "POST" }).catch(showError) }, "Cancel");
  const compare = h("a", { id: "sweep-compare" }, "compare trials…");
  const facts = h("div", { class: "facts", id: "sweep-facts" });
  const importances = h("div", { class: "facts", id: "sweep-importances" });
  const charts = h("div", { class: "charts" });
  const rows = h("tbody");
  root.append(h("h1", {}, `Sweep ${first.name ? `${first.name} ` : ""}`, status),
    h("div", { class: "toolbar" }, cancel, compare), facts, charts,
    h("h2", { text: "Parameter importances" }), importances,
    h("h2", { text: "Trials" }), h("div", { class: "table-wrap" }, h("table", { id: "trials" }, h("thead", {}, h("tr", {},
      ...["#", "state", "params", `${metric} by epoch`, metric, "job"].map((t) => h("th", { text: t })))), rows)));
  // Both charts exist from the start, side by side, so neither is sized before the other takes its place.
  const values = new Chart(charts, { id: "chart-trials", title: `${metric} of each complete trial`, xLabel: "trial",
    xWhole: true, series: [{ label: metric, points: true, line: false }] });
  const shown = Math.min(first.max_trials, MAX_CURVES);
  const curves = new Chart(charts, { id: "chart-sweep-epochs", xLabel: "epoch", xWhole: true,
    title: `${metric} by epoch, what the pruner saw${first.max_trials > shown ? ` (trials 0-${shown - 1})` : ""}`,
    series: Array.from({ length: shown }, (_, n) => ({ label: `trial ${n}` })) });
  onDispose(() => { values.destroy(); curves.destroy(); });
  const show = (doc) => {
    status.replaceChildren(badge(doc.status));
    cancel.hidden = doc.status !== "running";
    const jobs = doc.trials.map((t) => t.job_id).filter(Boolean);
    compare.href = `#/compare?ids=${jobs.join(",")}`;
    const best = doc.best ? doc.best.number : null;
    facts.replaceChildren(...[["objective", `${doc.objective.direction} ${metric}`], ["trials", `${doc.trials.length}/${doc.max_trials}`],
      ["parallelism", doc.parallelism], ["best", doc.best ? `${fmt(doc.best.value, 4)} (trial ${best})` : "—"],
      ["created", `${age(doc.created_at)} ago`]].map(([k, v]) => h("span", {}, `${k} `, h("b", { text: String(v) }))));
    const weights = Object.entries(doc.importances || {}).sort((a, b) => b[1] - a[1]);
    importances.replaceChildren(...(weights.length ? weights.map(([k, v]) => h("span", { "data-param": k }, `${k} `, h("b", { text: fmt(v, 3) })))
      : [h("span", { class: "muted", text: "Once two trials have completed." })]));
    rows.replaceChildren(...doc.trials.map((t) => {
      const epochs = Object.keys(t.intermediate || {}).map(Number).sort((a, b) => a - b);
      const last = epochs.length ? `${fmt(t.intermediate[epochs[epochs.length - 1]], 4)} @ ${epochs[epochs.length - 1]}` : "—";
      return h("tr", { "data-trial": t.number, class: t.number === best ? "best" : null },
        h("td", { text: t.number }), h("td", {}, badge(t.state)), h("td", { class: "wrap", text: paramsText(t.params) }),
        h("td", { class: "num", text: last }), h("td", { class: "num", text: fmt(t.value, 4) }),
        h("td", {}, t.job_id ? h("a", { href: `#/jobs/${t.job_id}`, text: t.job_id }) : h("span", { class: "muted", text: t.error || "—" })));
    }));
    const done = doc.trials.filter((t) => t.value !== null && t.value !== undefined);
    values.set([done.map((t) => t.number), done.map((t) => t.value)], done.length);
    // one series per trial (by number), aligned on the epochs any of them reported
    const seen = doc.trials.filter((t) => t.number < shown).map((t) => t.intermediate || {});
    const epochs = [...new Set(seen.flatMap((m) => Object.keys(m).map(Number)))].sort((a, b) => a - b);
    const columns = Array.from({ length: shown }, (_, n) => epochs.map((e) => finite((seen[n] || {})[e])));
    curves.set([epochs, ...columns], columns.reduce((a, c) => a + c.filter((v) => v !== null).length, 0));
    return doc.status !== "running" && !doc.trials.some((t) => t.state === "running");
  };
  await poll(1000, async () => show(await api.json(base)));
}

// ---------- a session ----------
// The tenant's sessions, newest first, as the jobs list shows jobs; a session's calls move it, so the list
// re-reads itself every few seconds.
async function sessionsList() {
  const input = h("input", { id: "session-id", size: 50, placeholder: "sess_..." });
  const body = h("tbody", { id: "sessions-body" });
  view().append(h("h1", { text: "Sessions" }), h("div", { class: "toolbar" }, input,
    h("button", { class: "primary", onclick: () => { location.hash = `#/sessions/${input.value.trim()}`; } }, "Open")),
  h("div", { class: "table-wrap" }, h("table", { id: "sessions" }, h("thead", {}, h("tr", {},
    ...["session", "network", "form", "parameters", "device", "optimizer", "version", "age", ""].map((t) => h("th", { text: t })))), body)));
  await poll(5000, async () => {
    const page = await api.json("/v1/sessions?limit=100");
    body.replaceChildren(...page.data.map((s) => {
      const remove = h("button", { class: "danger delete", onclick: async () => {
        try { await api.fetch(`/v1/sessions/${s.id}`, { method: "DELETE" }); row.remove(); } catch (err) { showError(err); } } }, "Delete");
      const row = h("tr", { "data-session-id": s.id },
        h("td", {}, h("a", { href: `#/sessions/${s.id}`, text: s.id })),
        h("td", { class: "wrap", text: `${s.repr.split("(")[0]}${s.network_id ? ` (${s.network_id})` : ""}` }),
        h("td", { text: s.format }), h("td", { class: "num", text: s.num_elements.toLocaleString("en-US") }),
        h("td", { text: s.device }), h("td", { text: s.optimizer ? s.optimizer.type : "none" }),
        h("td", { class: "num version", text: s.version ?? 0 }), h("td", { text: age(s.created_at) }), h("td", {}, remove));
      return row;
    }));
    if (!page.data.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted", text: "No sessions: POST /v1/sessions or client.remote(...) starts one." })));
    return false;
  });
}
function gradStats(values) {
  const flat = [values].flat(Infinity).map(Number);
  if (!flat.length) return {};
  let sum = 0; let sq = 0; let min = Infinity; let max = -Infinity;
  for (const v of flat) { sum += v; sq += v * v; if (v < min) min = v; if (v > max) max = v; }
  return { norm: Math.sqrt(sq), mean: sum / flat.length, min, max };
}
async function sessionPage(id) {
  const base = `/v1/sessions/${encodeURIComponent(id)}`;
  const s = await api.json(base);
  const root = view();
  const last = h("div", { id: "session-last", class: "facts" });
  const graphBox = h("div", { class: "graph", id: "graph" }, h("span", { class: "muted", text: "loading…" }));
  const grads = h("tbody");
  root.append(h("h1", { text: `Session ${id}` }),
    h("div", { class: "facts" }, ...[["device", s.device], ["seed", s.seed], ["optimizer", s.optimizer ? s.optimizer.type : "none"], ["version", s.version]]
      .map(([k, v]) => h("span", {}, `${k} `, h("b", { text: String(v ?? "—") })))),
    h("h2", { text: "print(net)" }), h("pre", { id: "session-repr", text: s.repr }),
    h("h2", { text: "Last forward and loss" }), last,
    h("h2", { text: "Parameters and their grads" }),
    h("table", { id: "session-params" }, h("thead", {}, h("tr", {}, ...["name", "shape", "numel", "grad norm", "grad mean", "grad min", "grad max"].map((t) => h("th", { text: t })))), grads),
    h("h2", { text: "Autograd graph" }), graphBox);
  for (const root_ of ["output", "loss"]) {
    api.json(`${base}/graph?root=${root_}&max_nodes=1`).then((g) => {
      last.append(h("span", { "data-root": root_ }, `last ${root_}: grad_fn=`, h("b", { text: g.nodes.length ? g.nodes[0].name : "None" })));
    }).catch((err) => {
      if (err.status === 401) showError(err);
      else last.append(h("span", { "data-root": root_, class: "muted", text: `no ${root_} yet (${err.message})` }));
    });
  }
  loadGraph(`${base}/graph?format=svg`, graphBox, "No graph yet: run a forward (and a loss) first.").catch(showError);
  for (const p of s.parameters) {
    const row = h("tr", { "data-param": p.name }, h("td", { text: p.name }), h("td", { text: `[${p.shape.join(", ")}]` }), h("td", { class: "num", text: p.numel }));
    grads.append(row);
    api.json(`${base}/parameters/${encodeURIComponent(p.name)}`).then((v) => {
      if (v.grad === null) { row.append(h("td", { class: "grad-none muted", colspan: 4, text: "grad is None" })); return; }
      const st = gradStats(v.grad);
      row.append(...["norm", "mean", "min", "max"].map((k) => h("td", { class: `num grad-${k}`, text: fmt(st[k]) })));
    }).catch(showError);
  }
}

route();
