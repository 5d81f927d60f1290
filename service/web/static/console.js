// mqlflow console. Every value from the service is put into the page with
// textContent (never innerHTML), so pipelines and documents always show as text.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const PAGE = document.body.dataset.page;
const HAVE_CHARTS = typeof window.uPlot === "function";
window.mqlCharts = {};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return e;
}

function setText(node, text) {
  const t = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== t) node.textContent = t;
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) { location.href = "/login"; throw new Error("log in first"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function post(path) {
  const r = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: { "X-CSRF-Token": CSRF, Accept: "application/json" },
  });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function status(text, isError) {
  const s = document.getElementById("status");
  setText(s, text);
  s.className = isError ? "error" : "muted";
}

function fmtNum(n) { return n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"); }
function fmtDate(d) { return d && d.$date ? String(d.$date) : (d ? String(d) : ""); }
function fmtLag(s) { return s === null || s === undefined ? "" : `${Number(s).toFixed(1)} s`; }
function stateBadge(state) { return el("span", { class: `state state-${state}`, "data-state": state }, state); }
function procUrl(name) { return "/processors/" + encodeURIComponent(name); }

function columns(hist, keys) { return [hist.t, ...keys.map((k) => hist[k])]; }

// One uPlot chart, kept and fed with setData; data-points tells tests what is drawn.
function chart(id, host, opts, data) {
  let c = window.mqlCharts[id];
  if (!HAVE_CHARTS) {
    if (!host.firstChild) host.appendChild(el("span", { class: "muted" }, "charts need uPlot: run scripts/browser.sh assets"));
    return;
  }
  if (!c) {
    c = new window.uPlot(opts, data, host);
    window.mqlCharts[id] = c;
  } else {
    c.setData(data);
  }
  host.dataset.points = String(data[0].length);
}

function sparkOpts() {
  return {
    width: 180, height: 40, legend: { show: false }, cursor: { show: false },
    axes: [{ show: false }, { show: false }],
    scales: { x: { time: true, range: (u, min, max) => [max - 60, max] }, y: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } },
    series: [{}, { stroke: "#00684a", fill: "rgba(0,104,74,0.12)", width: 1.5, points: { show: false } }],
  };
}

function bigOpts(title, series, yLabel) {
  const colors = ["#016bf8", "#00a35c", "#db3030"];
  return {
    title, width: 560, height: 220,
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } },
    axes: [{}, { label: yLabel, size: 60 }],
    series: [{}, ...series.map((s, i) => ({ label: s, stroke: colors[i], width: 1.5, spanGaps: false }))],
  };
}

// --- processors page ------------------------------------------------------------
const rows = new Map();

function processorsPage(main) {
  main.appendChild(el("h1", {}, "Stream processors"));
  const table = el("table", { id: "processors" },
    el("thead", {}, el("tr", {},
      ...["Name", "State", "Input", "Output", "DLQ", "Events/s (last minute)", "Watermark lag"].map((h) => el("th", {}, h)))),
    el("tbody"));
  main.appendChild(table);
  const empty = el("p", { class: "muted", id: "no-processors" }, "No stream processors yet: create one with sp.createStreamProcessor in mongosh.");
  main.appendChild(empty);
  const tbody = table.querySelector("tbody");

  async function refresh() {
    const data = await api("/api/processors");
    empty.hidden = data.processors.length > 0;
    const seen = new Set();
    for (const p of data.processors) {
      seen.add(p.name);
      let r = rows.get(p.name);
      if (!r) {
        r = {
          tr: el("tr", { "data-name": p.name }),
          state: el("td", { class: "state-cell" }),
          input: el("td", { class: "num input" }), output: el("td", { class: "num output" }),
          dlq: el("td", { class: "num dlq" }), spark: el("div", { class: "spark" }), now: el("span", { class: "rate-now" }),
          lag: el("td", { class: "num lag" }),
        };
        r.tr.append(el("td", {}, el("a", { href: procUrl(p.name), class: "proc-link" }, p.name)),
          r.state, r.input, r.output, r.dlq, el("td", { class: "rate" }, r.spark, r.now), r.lag);
        tbody.appendChild(r.tr);
        rows.set(p.name, r);
      }
      if (r.state.dataset.state !== p.state || r.state.dataset.err !== p.errorMsg) {
        r.state.replaceChildren(stateBadge(p.state));
        if (p.state === "FAILED" && p.errorMsg) r.state.appendChild(el("div", { class: "error" }, p.errorMsg));
        r.state.dataset.state = p.state;
        r.state.dataset.err = p.errorMsg;
      }
      setText(r.input, fmtNum(p.inputMessageCount));
      setText(r.output, fmtNum(p.outputMessageCount));
      setText(r.dlq, fmtNum(p.dlqMessageCount));
      setText(r.lag, fmtLag(p.watermarkLagSeconds));
      const last = p.rate.input.length ? p.rate.input[p.rate.input.length - 1] : null;
      setText(r.now, last === null ? "" : `${Number(last).toFixed(1)}/s`);
      chart("spark:" + p.name, r.spark, sparkOpts(), columns(p.rate, ["input"]));
    }
    for (const [name, r] of rows) {
      if (!seen.has(name)) { r.tr.remove(); rows.delete(name); window.mqlCharts["spark:" + name]?.destroy(); delete window.mqlCharts["spark:" + name]; }
    }
  }
  poll(refresh, 2000);
}

// --- one processor --------------------------------------------------------------
function processorPage(main) {
  const name = decodeURIComponent(location.pathname.slice("/processors/".length));
  const title = el("h1", {}, name, " ");
  const stateHost = el("span", { id: "state" });
  title.appendChild(stateHost);
  const err = el("div", { class: "error", id: "error-msg" });
  const buttons = el("div", { id: "actions" },
    el("button", { id: "btn-start", onclick: () => act("start") }, "Start"),
    el("button", { id: "btn-stop", onclick: () => act("stop") }, "Stop"),
    el("button", { id: "btn-drop", class: "danger", onclick: () => act("drop") }, "Drop"));
  const figures = el("table", { class: "kv", id: "figures" });
  const flow = el("div", { class: "flow", id: "dataflow" });
  const rateChart = el("div", { id: "rate-chart", class: "card" });
  const lagChart = el("div", { id: "lag-chart", class: "card" });
  const ops = el("table", { id: "operator-stats" });
  const dlqInfo = el("p", { class: "muted", id: "dlq-info" });
  const dlq = el("table", { id: "dlq" }, el("thead", {}, el("tr", {}, el("th", {}, "dlqTime"), el("th", {}, "errInfo.reason"), el("th", {}, "doc"))), el("tbody"));
  const sampleNote = el("p", { class: "muted", id: "sample-note" });
  const sample = el("div", { id: "sample" });
  const pipeline = el("pre", { id: "pipeline" });
  main.append(title, err, buttons,
    el("h2", {}, "Figures"), figures,
    el("h2", {}, "Dataflow"), flow,
    el("h2", {}, "Rates and watermark lag (last 15 minutes)"), el("div", { class: "grid" }, rateChart, lagChart),
    el("h2", {}, "Operator stats"), ops,
    el("h2", {}, "Dead letter queue (last 50)"), dlqInfo, dlq,
    el("h2", {}, "Output sample"), sampleNote, sample,
    el("h2", {}, "Pipeline"), pipeline);

  async function act(what) {
    if (what === "drop" && !window.confirm(`Drop stream processor "${name}"? Its definition and checkpoints are deleted.`)) return;
    try {
      status(`${what}…`);
      await post(`/api/processors/${encodeURIComponent(name)}/${what}`);
      status(`${what}: done`);
      if (what === "drop") { location.href = "/"; return; }
      await refresh();
    } catch (e) { status(`${what} failed: ${e.message}`, true); }
  }

  let flowKey = "";
  async function refresh() {
    const d = await api(`/api/processors/${encodeURIComponent(name)}`);
    if (stateHost.dataset.state !== d.state) { stateHost.replaceChildren(stateBadge(d.state)); stateHost.dataset.state = d.state; }
    setText(err, d.state === "FAILED" ? d.errorMsg : "");
    const s = d.stats;
    const kv = [["Input messages", fmtNum(s.inputMessageCount)], ["Output messages", fmtNum(s.outputMessageCount)],
      ["DLQ messages", fmtNum(s.dlqMessageCount)], ["State size", fmtNum(s.stateSize)],
      ["Watermark", fmtDate(s.watermark)], ["Watermark lag", fmtLag(s.watermarkLagSeconds)]];
    figures.replaceChildren(...kv.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { "data-field": k }, v))));
    const key = JSON.stringify(d.dataflow);
    if (key !== flowKey) {
      flowKey = key;
      const parts = [];
      d.dataflow.forEach((n, i) => {
        if (i) parts.push(el("span", { class: "arrow" }, "→"));
        parts.push(el("div", { class: `node ${n.kind}` }, el("b", {}, n.label), el("span", {}, n.detail),
          n.inner && n.inner.length ? el("ul", {}, ...n.inner.map((x) => el("li", {}, x))) : null));
      });
      flow.replaceChildren(...parts);
      setText(pipeline, d.pipelineText);
    }
    chart("rates", rateChart, bigOpts("events/s", ["input", "output", "dlq"], "events/s"), columns(d.history, ["input", "output", "dlq"]));
    chart("lag", lagChart, bigOpts("watermark lag", ["lag (s)"], "seconds"), columns(d.history, ["lag"]));
    const opStats = s.operatorStats || [];
    const cols = [];
    for (const o of opStats) for (const k of Object.keys(o)) if (!cols.includes(k)) cols.push(k);
    ops.replaceChildren(el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {}, c)))),
      el("tbody", {}, ...opStats.map((o) => el("tr", {}, ...cols.map((c) => {
        const v = o[c];
        return el("td", { class: typeof v === "number" ? "num" : "" },
          v === null || v === undefined ? "" : typeof v === "object" ? (v.$date ? v.$date : JSON.stringify(v)) : typeof v === "number" ? fmtNum(v) : v);
      })))));
  }

  async function refreshDlq() {
    const d = await api(`/api/processors/${encodeURIComponent(name)}/dlq`);
    setText(dlqInfo, !d.configured ? "No dlq option: dead letters are only counted." : d.error ? d.error : `From ${d.target}`);
    dlq.querySelector("tbody").replaceChildren(...d.entries.map((e) =>
      el("tr", { class: "dlq-entry" }, el("td", {}, e.dlqTime), el("td", { class: "reason" }, e.reason), el("td", {}, el("pre", { class: "dlq-doc" }, e.doc)))));
  }

  let cursor = "0";
  const shown = [];
  async function refreshSample() {
    const d = await api(`/api/processors/${encodeURIComponent(name)}/sample?cursor=${encodeURIComponent(cursor)}`);
    cursor = d.cursor;
    setText(sampleNote, d.note || "Live: the same stream as sample() in mongosh (newest first, last 20).");
    if (d.docs.length) {
      shown.unshift(...d.docs.reverse());
      shown.length = Math.min(shown.length, 20);
      sample.replaceChildren(...shown.map((t) => el("pre", { class: "sample-doc" }, t)));
    }
  }
  poll(refresh, 2000);
  poll(refreshDlq, 5000);
  poll(refreshSample, 1500);
}

// --- connections ------------------------------------------------------------------
function connectionsPage(main) {
  main.appendChild(el("h1", {}, "Connections"));
  main.appendChild(el("p", { class: "muted" }, "The connection registry (--connections); passwords and secret settings are masked."));
  const table = el("table", { id: "connections" });
  main.appendChild(table);
  api("/api/connections").then((d) => {
    table.replaceChildren(el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Type"), el("th", {}, "Settings"))),
      el("tbody", {}, ...d.connections.map((c) => {
        const rest = Object.assign({}, c); delete rest.name; delete rest.type;
        return el("tr", {}, el("td", {}, c.name), el("td", {}, c.type), el("td", {}, el("pre", {}, JSON.stringify(rest, null, 2))));
      })));
  }).catch((e) => status(e.message, true));
}

function poll(fn, ms) {
  let busy = false;
  async function tick() {
    if (busy) return;
    busy = true;
    try { await fn(); } catch (e) { status(e.message, true); } finally { busy = false; }
  }
  tick();
  setInterval(tick, ms);
}

if (document.body.dataset.auth === "1") {
  const b = document.getElementById("logout");
  b.hidden = false;
  b.addEventListener("click", () => post("/logout").then(() => { location.href = "/login"; }));
}

const PAGES = { processors: processorsPage, processor: processorPage, connections: connectionsPage };
PAGES[PAGE](document.getElementById("main"));
