// edgeswitch dashboard: polls /api/summary every POLL_MS and redraws. Plain JS, inline SVG,
// nothing loaded from the network. Log text is always written as text (textContent), never
// as HTML: clip ids and labels come from a device and are not trusted.
"use strict";
const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let token = null;

function readToken() {
  // #token=... in the URL (then removed from the address bar), else this tab's stored one
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("edgeswitch-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("edgeswitch-token");
}

const pct = (x) => (x === null || x === undefined) ? "–" : (100 * x).toFixed(1) + "%";
const num = (x, d = 1) => (x === null || x === undefined) ? "–" : Number(x).toFixed(d);
const clock = (t) => new Date(t * 1000).toLocaleTimeString();

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const c of cells) {
      const td = typeof c === "object" && c !== null ? el("td", c.text, c.cls) : el("td", c);
      tr.append(td);
    }
    return tr;
  }));
}

function drawOverTime(buckets) {
  const svg = $("over-time");
  const W = 800, H = 220, L = 40, R = 10, T = 10, B = 24;
  const parts = [];
  for (const y of [0, 0.5, 1]) {
    const py = T + (1 - y) * (H - T - B);
    parts.push(svgEl("line", {x1: L, x2: W - R, y1: py, y2: py, class: "axis"}));
    parts.push(svgEl("text", {x: L - 6, y: py + 4, "text-anchor": "end"}, (100 * y) + "%"));
  }
  if (buckets.length) {
    const n = buckets.length, bw = (W - L - R) / n;
    const maxClips = Math.max(...buckets.map((b) => b.clips));
    buckets.forEach((b, i) => {
      const h = (H - T - B) * b.clips / maxClips * 0.9;
      parts.push(svgEl("rect", {x: L + i * bw + 1, y: H - B - h, width: Math.max(bw - 2, 1),
                                height: h, class: "clipsbar"}));
    });
    for (const [key, cls] of [["offload_rate", "offload"], ["fallback_rate", "fallback"]]) {
      const pts = buckets.map((b, i) =>
        `${L + (i + 0.5) * bw},${T + (1 - b[key]) * (H - T - B)}`).join(" ");
      parts.push(svgEl("polyline", {points: pts, class: cls}));
    }
    parts.push(svgEl("text", {x: L, y: H - 6}, clock(buckets[0].start)));
    parts.push(svgEl("text", {x: W - R, y: H - 6, "text-anchor": "end"},
                     clock(buckets[n - 1].end)));
    $("clips-max").textContent = `clips per bucket (max ${maxClips})`;
  }
  svg.replaceChildren(...parts);
}

function drawByClass(byClass) {
  const svg = $("by-class");
  const entries = Object.entries(byClass);
  const rowH = Math.min(28, 190 / Math.max(entries.length, 1));
  svg.setAttribute("viewBox", `0 0 400 ${Math.max(rowH * entries.length + 10, 40)}`);
  const parts = [];
  entries.forEach(([cls, a], i) => {
    const y = 5 + i * rowH, w = 170;
    parts.push(svgEl("text", {x: 0, y: y + rowH * 0.6, class: "label"}, cls));
    parts.push(svgEl("rect", {x: 110, y: y + 3, width: w, height: rowH - 8, class: "barbg"}));
    if (a.rate !== null) {
      parts.push(svgEl("rect", {x: 110, y: y + 3, width: w * a.rate, height: rowH - 8,
                                class: "bar"}));
    }
    parts.push(svgEl("text", {x: 286, y: y + rowH * 0.6},
                     a.rate === null ? "no cloud answer" : `${pct(a.rate)} of ${a.edge_said}`));
  });
  svg.replaceChildren(...parts);
}

function render(s) {
  $("log-name").textContent = s.log + (s.edge_model ? ` · edge ${s.edge_model}` : "") +
    (s.cloud_model ? ` · cloud ${s.cloud_model}` : "");
  $("updated").textContent = "Last update " + clock(s.generated_at) + ".";
  renderEvents(s.events);
  if (s.status !== "ok") {
    setStatus(s.message || "waiting", "stale");
    return;
  }
  setStatus("live", "live");
  $("clips").textContent = String(s.clips);
  $("clips").dataset.value = String(s.clips);
  $("offload-rate").textContent = pct(s.offload_rate);
  $("offload-rate").dataset.value = String(s.offload_rate);
  $("offloaded").textContent = `${s.offloaded} offloaded, ${s.shadow} shadow`;
  $("fallbacks").textContent = String(s.fallbacks);
  $("fallback-reasons").textContent = Object.entries(s.fallback_reasons)
    .map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  const ag = s.agreement;
  $("agreement").textContent = pct(ag.all.rate);
  $("agreement-split").textContent =
    `offloaded ${pct(ag.offloaded.rate)} of ${ag.offloaded.answered}, ` +
    `shadow ${pct(ag.shadow.rate)} of ${ag.shadow.answered}`;
  const d = s.drift;
  $("drift").textContent = d.monitored ? d.state : "off";
  $("drift").className = "v" + (d.state === "alarm" ? " alarm" : "");
  $("drift-detail").textContent = !d.monitored || d.statistic === undefined ? d.message :
    `${d.statistic} ${num(d.value, 3)} (threshold ${num(d.threshold, 3)}), ` +
    `${d.alarms} alarms`;
  $("span").textContent = s.from ? `${clock(s.from)} – ${clock(s.to)}` : "";
  drawOverTime(s.over_time);
  drawByClass(ag.by_class);
  $("latency-window").textContent = `(last ${s.latency_window} decisions)`;
  fillRows($("latency").tBodies[0], Object.entries(s.latency_ms).map(([k, v]) =>
    [k.replace("_ms", ""), ...(v ? [v.p50, v.p99, v.mean, v.max].map((x) =>
      ({text: num(x, 2), cls: "num"})) : ["–", "–", "–", "–"])]));
  const devices = Object.entries(s.devices);
  fillRows($("devices").tBodies[0], devices.length ? devices.map(([k, v]) => [k, v])
    : [["no cloud request named a device", ""]]);
  fillRows($("last").tBodies[0], s.last.map((r) => [
    clock(r.time), r.clip_id, r.label, r.answered_by, r.edge_label, r.cloud_label ?? "–",
    {text: num(r.score, 3), cls: "num"}, {text: num(r.total_ms, 1), cls: "num"},
    r.fallback_reason ? {text: "fallback: " + r.fallback_reason, cls: "bad"}
      : (r.shadow ? "shadow" : (r.offloaded ? "offloaded" : ""))]));
}

function renderEvents(ev) {
  $("events-panel").hidden = !ev.given;
  if (!ev.given) return;
  $("events-path").textContent = `${ev.path}: ${ev.count} events` +
    (ev.message ? ` (${ev.message})` : "");
  fillRows($("events").tBodies[0], ev.events.map((e) => [
    e.id, e.source, num(e.start_s), num(e.end_s), num(e.peak_probability, 2),
    {text: e.confirmed_by, cls: e.confirmed_by === "overruled" ? "" : "bad"}, e.clips]));
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + cls;
}

async function poll() {
  const headers = token ? {Authorization: "Bearer " + token} : {};
  try {
    const r = await fetch("/api/summary?buckets=30&last=20", {headers, cache: "no-store"});
    if (r.status === 401) {
      $("login").hidden = false;
      $("login-error").textContent = token ? "that token was refused" : "";
      setStatus("needs a token", "stale");
      return;  // no more polls until a token is given
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    $("login").hidden = true;
    render(await r.json());
  } catch (e) {
    setStatus("cannot reach the dashboard server: " + e.message, "stale");
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  token = readToken();
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("edgeswitch-token", token);
    poll();
  });
  poll();
});
