// retrain-daemon dashboard: draws GET /api/v1/dashboard, refreshes by polling, and calls the token-guarded
// endpoints for its buttons. Plain DOM, no framework, no build step; text is always set as text (never HTML).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "retrain.api_token";
const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(500, Number(params.get("refresh") || 3000));
let last = null; // the last document drawn
let clockOffsetMs = 0; // the daemon's clock minus this browser's
const drawn = {}; // section id -> the JSON it was drawn from

// --- small helpers ------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function now() { return Date.now() + clockOffsetMs; }

function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function span(seconds) {
  const sec = Math.max(0, Math.round(Math.abs(seconds)));
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m ${sec % 60}s`;
  if (sec < 86400) return `${Math.floor(sec / 3600)}h ${Math.floor((sec % 3600) / 60)}m`;
  return `${Math.floor(sec / 86400)}d ${Math.floor((sec % 86400) / 3600)}h`;
}

// A countdown to (or time since) an instant, kept current every second by tick().
function countdown(iso) {
  return h("span", { class: "countdown", dataset: { at: iso } }, relative(iso));
}

function relative(iso) {
  const delta = (new Date(iso).getTime() - now()) / 1000;
  return delta >= 0 ? `in ${span(delta)}` : `${span(delta)} ago`;
}

function tick() {
  for (const el of document.querySelectorAll(".countdown")) el.textContent = relative(el.dataset.at);
}

function score(value) { return typeof value === "number" ? value.toFixed(4) : "–"; }

function bar(value, max, cls) {
  const fraction = max > 0 ? Math.min(1, value / max) : 0;
  const fill = h("div", { class: "fill" });
  fill.style.width = `${(fraction * 100).toFixed(1)}%`;
  return h("div", {
    class: `bar ${fraction >= 1 ? "full" : ""} ${cls || ""}`, role: "progressbar",
    "aria-valuenow": value, "aria-valuemin": 0, "aria-valuemax": max,
  }, fill);
}

function badge(text, cls) { return h("span", { class: `badge ${cls || text}` }, text); }

// --- messages and actions -----------------------------------------------------------------------
function say(text, kind) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = kind || "";
  box.hidden = false;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function act(path, body, done) {
  if (!token()) {
    say("Enter the API token (http.api_token) first: buttons call token-guarded endpoints.", "error");
    return;
  }
  let answer;
  try {
    answer = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token()}` },
      body: JSON.stringify({ actor: "dashboard", ...body }),
    });
  } catch (error) {
    say(`The daemon did not answer: ${error}`, "error");
    return;
  }
  let data = {};
  try { data = await answer.json(); } catch (error) { data = {}; }
  if (!answer.ok) {
    const refused = answer.status === 401 ? "Refused: wrong or missing API token" : `Refused (${answer.status})`;
    say(`${refused}: ${data.detail || answer.statusText}`, "error");
    return;
  }
  say(done(data), "ok");
  refresh();
}

// --- sections -----------------------------------------------------------------------------------
function ruleCard(rule) {
  const g = rule.gauges;
  const d = rule.decision;
  const state = [];
  if (!rule.enabled) state.push(badge("disabled"));
  if (rule.paused) state.push(badge("paused"));
  else state.push(badge(d.outcome === "launch" ? "launch" : d.code, d.outcome === "launch" ? "launch" : "muted"));
  const lines = [];
  const nl = g.new_labels;
  if (nl) {
    lines.push(h("div", { class: "row" }, h("span", {}, "new labels"),
      h("span", { class: "labels-count" }, `${g.pending_labels} / ${nl.min_new_labels}`)));
    lines.push(bar(g.pending_labels, nl.min_new_labels, "labels"));
    if (nl.min_new_images) {
      lines.push(h("div", { class: "row" }, h("span", {}, "new images"), h("span", {}, `${g.pending_images} / ${nl.min_new_images}`)));
      lines.push(bar(g.pending_images, nl.min_new_images, "images"));
    }
    for (const c of nl.per_class) {
      lines.push(h("div", { class: "row" }, h("span", {}, `class ${c.class}`), h("span", {}, `${c.have} / ${c.need} boxes`)));
      lines.push(bar(c.have, c.need, "per-class"));
    }
    if (nl.quiet_ends_at) lines.push(h("div", { class: "row" }, h("span", {}, "quiet period ends"), countdown(nl.quiet_ends_at)));
    if (nl.max_wait_ends_at) lines.push(h("div", { class: "row" }, h("span", {}, "max wait ends"), countdown(nl.max_wait_ends_at)));
  } else {
    lines.push(h("div", { class: "row" }, h("span", {}, "pending labels"), h("span", { class: "labels-count" }, String(g.pending_labels))));
  }
  if (g.cooldown_until) lines.push(h("div", { class: "row" }, h("span", {}, "cooldown until"), countdown(g.cooldown_until)));
  if (g.next_slot) {
    lines.push(h("div", { class: "row next-slot" }, h("span", {}, `next slot (${g.next_slot.cron}, ${g.next_slot.tz})`),
      h("span", { title: when(g.next_slot.at) }, countdown(g.next_slot.at))));
  }
  lines.push(h("div", { class: "row" }, h("span", {}, "runs active / launches today"),
    h("span", {}, `${g.active_runs.length}/${g.max_concurrent_runs} · ${g.launches_last_day}/${g.max_runs_per_day || "∞"}`)));
  const paused = rule.paused
    ? h("div", { class: "reason paused-by" }, `paused by ${rule.paused.actor}: ${rule.paused.reason}`) : null;
  const problem = rule.dataset_problem ? h("div", { class: "reason" }, badge("dataset", "bad"), " ", rule.dataset_problem) : null;
  const name = rule.name;
  const actions = h("div", { class: "actions" },
    h("button", { class: "trigger", onclick: () => act(`/api/v1/rules/${encodeURIComponent(name)}/trigger`,
      { reason: "triggered from the dashboard" }, (r) => `Trigger of ${name} journaled (request ${r.request}); the daemon answers it on its next pass.`) }, "Trigger"),
    rule.paused
      ? h("button", { class: "resume", onclick: () => act(`/api/v1/rules/${encodeURIComponent(name)}/resume`,
        { reason: "resumed from the dashboard" }, () => `${name} resumed.`) }, "Resume")
      : h("button", { class: "pause", onclick: () => act(`/api/v1/rules/${encodeURIComponent(name)}/pause`,
        { reason: "paused from the dashboard" }, () => `${name} paused.`) }, "Pause"));
  return h("article", { class: "card rule", dataset: { rule: name } },
    h("h3", {}, name, " ", state),
    h("div", { class: "muted reason" }, `${rule.model} · ${rule.dataset.source} · ${rule.file}:${rule.line}`),
    paused, problem, ...lines,
    h("div", { class: "reason decision" }, d.outcome === "launch" ? `LAUNCH ${d.run_key}: ${d.reason}` : d.reason),
    h("ul", { class: "decisions" }, rule.recent_decisions.map((r) =>
      h("li", {}, `${when(r.at)} ${r.outcome.toUpperCase()} [${r.code}] ${r.reason}`))),
    actions);
}

// A line chart: points [{x, y, cls, title, data}], an optional step line, numeric or time x.
function chart({ points, line, stepLine, cls, xTime, yLabel, width = 520, height = 200 }) {
  const pad = { l: 42, r: 10, t: 10, b: 24 };
  const all = [...points, ...(stepLine || [])];
  const xs = all.map((p) => p.x);
  const ys = all.map((p) => p.y).filter((y) => typeof y === "number");
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
  let y1 = Math.max(0.05, ...ys) * 1.1;
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - (y / y1) * (height - pad.t - pad.b);
  const svg = s("svg", { class: cls, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": yLabel });
  for (let i = 0; i <= 4; i++) {
    const y = (y1 * i) / 4;
    svg.append(s("line", { class: "grid-line", x1: pad.l, x2: width - pad.r, y1: Y(y), y2: Y(y) }));
    svg.append(s("text", { x: 2, y: Y(y) + 3 }, y.toFixed(2)));
  }
  svg.append(s("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: height - pad.b, y2: height - pad.b }));
  const label = (x) => (xTime ? new Date(x).toISOString().slice(5, 16).replace("T", " ") : String(x));
  svg.append(s("text", { x: pad.l, y: height - 6 }, label(x0)));
  svg.append(s("text", { x: width - pad.r, y: height - 6, "text-anchor": "end" }, label(x1)));
  if (stepLine && stepLine.length) {
    let d = "";
    stepLine.forEach((p, i) => {
      if (typeof p.y !== "number") return;
      d += d ? ` H ${X(p.x)} V ${Y(p.y)}` : `M ${X(p.x)} ${Y(p.y)}`;
      if (i === stepLine.length - 1) d += ` H ${width - pad.r}`;
    });
    if (d) svg.append(s("path", { class: "champion-line", d }));
  }
  if (line) {
    const d = points.filter((p) => typeof p.y === "number").map((p, i) => `${i ? "L" : "M"} ${X(p.x)} ${Y(p.y)}`).join(" ");
    if (d) svg.append(s("path", { class: "curve-line", d }));
  }
  for (const p of points) {
    if (typeof p.y !== "number") continue;
    const dot = s("circle", { class: `point ${p.cls}`, cx: X(p.x), cy: Y(p.y), r: 5 }, s("title", {}, p.title));
    for (const [k, v] of Object.entries(p.data || {})) dot.setAttribute(`data-${k}`, v);
    svg.append(dot);
  }
  return svg;
}

function runLinks(run) {
  const links = [];
  if (run.links.mlflow_run) links.push(h("a", { href: run.links.mlflow_run, target: "_blank", rel: "noopener" }, "MLflow run"));
  if (run.links.mlflow_version) links.push(h("a", { href: run.links.mlflow_version, target: "_blank", rel: "noopener" }, `v${run.promotion.version}`));
  return links.flatMap((a, i) => (i ? [" · ", a] : [a]));
}

function activeRun(run) {
  const p = run.progress;
  const epochs = p && p.epochs;
  const parts = [
    h("h3", {}, run.run_key, " ", badge(run.state)),
    h("div", { class: "muted reason" }, `${run.rule} · ${run.trigger} · started ${when(run.created_at)} (`, countdown(run.created_at), ")"),
    h("div", { class: "reason" }, run.reason),
  ];
  if (run.error) parts.push(h("div", { class: "reason waiting" }, badge("waiting", "bad"), " ", run.error));
  if (p && p.points.length) {
    parts.push(h("div", { class: "row" }, h("span", {}, p.final ? "training done (best weights checked)" : "epoch"),
      h("span", { class: "epoch-count" }, `${p.epoch} / ${epochs || "?"}`)));
    parts.push(bar(p.epoch, epochs || p.epoch, "epochs"));
    parts.push(chart({
      cls: "curve", line: true, yLabel: "validation mAP50-95 per epoch",
      points: p.points.map((q) => ({ x: q.epoch, y: q.map50_95, cls: "epoch", title: `epoch ${q.epoch}: mAP50-95 ${score(q.map50_95)}`, data: { epoch: q.epoch } })),
    }));
  } else {
    parts.push(h("div", { class: "muted" }, "no training epoch reported yet"));
  }
  parts.push(h("div", { class: "actions" }, runLinks(run),
    h("button", { class: "cancel danger", onclick: () => {
      if (confirm(`Cancel run ${run.run_key}?`)) {
        act(`/api/v1/runs/${encodeURIComponent(run.run_key)}/cancel`, { reason: "cancelled from the dashboard" },
          () => `Cancel of ${run.run_key} sent; its end is recorded on the next poll.`);
      }
    } }, "Cancel")));
  return h("article", { class: "card run", dataset: { run: run.run_key } }, parts);
}

function recentRuns(list) {
  if (!list.length) return h("p", { class: "muted" }, "No finished run yet.");
  const rows = list.map((run) => h("tr", { dataset: { run: run.run_key } },
    h("td", {}, run.run_key, h("br"), h("span", { class: "muted" }, run.rule)),
    h("td", {}, badge(run.state)),
    h("td", { class: "wrap" }, `${run.trigger}: ${run.reason}`),
    h("td", {}, run.snapshot ? run.snapshot.slice(0, 12) : "–", h("br"), h("span", { class: "muted" }, run.dataset_source || "")),
    h("td", {}, score(run.metrics.map50_95)),
    h("td", { class: "wrap" }, run.promotion.decision ? [badge(run.promotion.decision), ` v${run.promotion.version}: ${run.promotion.reason}`] : "–",
      run.error ? h("div", { class: "reason" }, badge("error", "bad"), " ", run.error) : null),
    h("td", {}, when(run.updated_at)),
    h("td", {}, runLinks(run))));
  return h("div", { class: "scroll" }, h("table", { class: "recent-runs" },
    h("thead", {}, h("tr", {}, ["run", "state", "trigger", "data", "mAP50-95", "gate", "ended", "links"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows)));
}

function perClass(pc) {
  if (!pc) return null;
  const names = Object.keys(pc.candidate);
  const rows = [];
  for (const name of names) {
    const cand = pc.candidate[name];
    const champ = pc.champion ? pc.champion[name] : null;
    rows.push(h("span", { class: "reason" }, name));
    rows.push(h("div", {},
      h("div", { title: `candidate v${pc.version}: ${score(cand)}` }, bar(cand || 0, 1, "candidate")),
      champ === null || champ === undefined ? null : h("div", { title: `champion v${pc.champion_version}: ${score(champ)}` }, bar(champ, 1, "champion"))));
  }
  return h("div", { class: "per-class" },
    h("div", { class: "muted" }, `AP50-95 per class on the ${pc.split || "val"} split: candidate v${pc.version} (blue) against champion ` +
      (pc.champion_version ? `v${pc.champion_version} (purple)` : "(none)")),
    h("div", { class: "pc" }, rows));
}

function modelCard(model) {
  const points = model.versions.map((v) => ({
    x: new Date(v.at).getTime(), y: v.map50_95, cls: `${v.decision}${v.rolled_back ? " rolled-back" : ""}`,
    title: `v${v.version} ${v.decision}${v.rolled_back ? " (rolled back)" : ""}: mAP50-95 ${score(v.map50_95)} — ${v.reason}`,
    data: { version: v.version, decision: v.decision },
  }));
  const stepLine = model.champion_line.map((c) => ({ x: new Date(c.at).getTime(), y: c.map50_95 }));
  const form = h("form", { class: "actions rollback", onsubmit: (event) => {
    event.preventDefault();
    const to = form.querySelector("input").value.trim();
    if (!confirm(`Move the champion of ${model.model} back to ${to ? "v" + to : "the previous champion"}?`)) return;
    act(`/api/v1/models/${encodeURIComponent(model.model)}/rollback`, { reason: "rollback from the dashboard", ...(to ? { to } : {}) },
      (r) => `Champion of ${model.model}: v${r.previous} → v${r.champion}.`);
  } }, h("input", { type: "text", inputmode: "numeric", placeholder: "version (default: previous)", "aria-label": "rollback to version" }),
  h("button", { class: "danger", type: "submit" }, "Roll back"));
  return h("article", { class: "card model", dataset: { model: model.model } },
    h("h3", {}, model.model, " ", model.champion ? badge(`champion v${model.champion}`, "ok") : badge("no champion", "muted")),
    points.length
      ? chart({ cls: "history", points, stepLine, xTime: true, yLabel: `mAP50-95 of every version of ${model.model}` })
      : h("p", { class: "muted" }, "No version judged yet."),
    h("div", { class: "legend" }, h("span", {}, h("i", { class: "promoted" }), "promoted"), h("span", {}, h("i", { class: "rejected" }), "rejected"),
      h("span", {}, h("i", { class: "refused" }), "refused"), h("span", {}, h("i", { class: "rolled-back" }), "rolled back"),
      h("span", {}, h("i", { class: "champion" }), "champion")),
    perClass(model.per_class),
    model.rollbacks.length ? h("ul", { class: "decisions" }, model.rollbacks.map((r) =>
      h("li", {}, `${when(r.at)} rollback v${r.previous_version} → v${r.version} by ${r.actor}: ${r.reason}`))) : null,
    form);
}

function sourcesTable(doc) {
  const rows = doc.sources.map((x) => h("tr", { dataset: { source: x.name } },
    h("td", {}, x.name), h("td", {}, badge(x.connected ? "connected" : "disconnected", x.connected ? "ok" : "bad")),
    h("td", {}, `${x.events} (${x.new_events} new)`), h("td", {}, x.gaps), h("td", {}, x.rejected),
    h("td", {}, x.last_event_at ? countdown(x.last_event_at) : "never"),
    h("td", {}, x.last_reconcile_at ? [countdown(x.last_reconcile_at), x.reconcile_lag_s !== null ? ` (${x.reconcile_lag_s.toFixed(1)} s)` : ""] : "–"),
    h("td", { class: "wrap" }, x.last_error || "")));
  const sets = doc.datasets.map((x) => h("tr", { dataset: { dataset: x.name } },
    h("td", {}, x.name), h("td", { class: "wrap" }, x.source || "–"),
    h("td", {}, badge(x.watched ? "watched" : "not watched", x.watched ? "ok" : "bad")),
    h("td", { class: "wrap" }, x.problem ? [x.problem, " (since ", countdown(x.problem_since), ")"] : "")));
  return [
    h("div", { class: "scroll" }, h("table", { class: "sources" },
      h("thead", {}, h("tr", {}, ["source", "state", "events", "gaps", "rejected", "last event", "last reconcile", "error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows))),
    h("h2", {}, "Datasets"),
    h("div", { class: "scroll" }, h("table", { class: "datasets" },
      h("thead", {}, h("tr", {}, ["dataset", "source", "state", "problem"].map((t) => h("th", {}, t)))),
      h("tbody", {}, sets))),
  ];
}

// --- drawing ------------------------------------------------------------------------------------
function section(id, data, build) {
  const el = document.getElementById(id);
  const key = JSON.stringify(data);
  if (drawn[id] === key) return;
  if (el.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return; // typing
  drawn[id] = key;
  el.querySelector(".body").replaceChildren(...[build(data)].flat().filter(Boolean));
}

function draw(doc) {
  clockOffsetMs = new Date(doc.now).getTime() - Date.now();
  document.getElementById("version").textContent = `v${doc.version}`;
  const errors = document.getElementById("rule-errors");
  errors.hidden = !doc.rule_errors.length;
  errors.replaceChildren(...(doc.rule_errors.length ? [h("h2", {}, "Rule files refused (the last good version stays in force)"),
    h("ul", {}, doc.rule_errors.map((e) => h("li", { class: "reason" }, e)))] : []));
  section("rules", doc.rules, (rules) => rules.length
    ? h("div", { class: "grid" }, rules.map(ruleCard)) : h("p", { class: "muted" }, "No rule in force."));
  section("runs", { a: doc.active_runs, r: doc.recent_runs }, ({ a, r }) => [
    h("h3", {}, `Active (${a.length})`),
    a.length ? h("div", { class: "grid wide" }, a.map(activeRun)) : h("p", { class: "muted" }, "No run is active."),
    h("h3", {}, "Recent"), recentRuns(r)]);
  section("models", doc.models, (models) => models.length
    ? h("div", { class: "grid wide" }, models.map(modelCard)) : h("p", { class: "muted" }, "No model."));
  section("sources", { s: doc.sources, d: doc.datasets }, () => sourcesTable(doc));
  tick();
}

async function refresh() {
  const health = document.getElementById("health");
  try {
    const answer = await fetch("/api/v1/dashboard", { cache: "no-store" });
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    last = await answer.json();
    draw(last);
    health.textContent = `updated ${new Date().toLocaleTimeString()}`;
    health.className = "badge ok";
  } catch (error) {
    health.textContent = `daemon not answering (${error.message}); showing the last state`;
    health.className = "badge bad";
  }
}

function setUp() {
  const input = document.getElementById("token");
  document.getElementById("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    say(token() ? "Token kept for this tab; the buttons use it." : "No token entered.", token() ? "ok" : "error");
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    say("Token forgotten.", "ok");
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
  setInterval(tick, 1000);
}

document.addEventListener("DOMContentLoaded", setUp);
