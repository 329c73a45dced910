// edgeswitch device page: the device artifact (device.onnx, device.json) stepped clip by clip
// in the browser with onnxruntime-web, offloading to serve-cloud when the model asks.
//
// The loop ("step, then observe"), per clip:
//   out = run(clip, state, no cloud answer)
//   if out.offload: POST the clip to the cloud; if it answered:
//       out = run(clip, state, the cloud's answer)
//   state = out.*_next; show argmax(out.answer)
// A cloud that fails or times out leaves the first run's outputs: the edge answer stands,
// flagged "edge (cloud down)". Every decision is kept in window.deviceLog (what the tests read),
// with `model_ms`: the step's session.run, timed with performance.now().
//
// `?graph=int8` runs device.int8.onnx (an artifact exported with --int8) instead of device.onnx.
"use strict";

const INPUTS = ["clip", "belief", "age", "last", "cloud_proba", "cloud_mask", "threshold"];
const OUTPUTS = ["edge_proba", "trust", "offload", "answer", "belief_next", "age_next",
                 "last_next"];
const NEVER = 1e9;       // `age` of a stream the cloud never answered
const SHOWN = 20;        // rows in the latest-clips table
const MAX_STREAMS = 1000;  // stream states kept (the least recently seen is forgotten)
const G = 9.80665;       // m/s² per g
// a 6-channel model that names no channels: the smartwatch data's order (accelerometer in g,
// gyroscope in rad/s)
const WATCH_CHANNELS = ["ax", "ay", "az", "wx", "wy", "wz"];

const GRAPHS = {float: "device.onnx", int8: "device.int8.onnx"};  // device.json's graphs

const $ = (id) => document.getElementById(id);
window.deviceLog = [];

class PageError extends Error {}  // a problem to show as it is, without a stack
class OutOfRange extends PageError {}  // a clip the model must not run (live: skipped)

// ---- the artifact ---------------------------------------------------------------------------

function need(value, what) {
  if (value === undefined || value === null) throw new PageError(`device.json lacks ${what}`);
  return value;
}

const number = (v) => (v === "inf" ? Infinity : v === "-inf" ? -Infinity : Number(v));

// device.json (edgeswitch/device/spec.py, export.py), the few things the loop needs
function readSpec(raw) {
  if (raw.format !== "edgeswitch-device" || raw.format_version !== 1) {
    throw new PageError("device.json is not an edgeswitch device description of format " +
                        "version 1: export the bundle again (`edgeswitch export-device`)");
  }
  const classes = need(raw.classes, "classes").map(String);
  const [T, C] = need(raw.clip_shape, "clip_shape").map(Number);
  const state = need(raw.state, "state");
  const init = need(raw.initial_state, "initial_state");
  const op = need(raw.operating_point, "operating_point");
  const K = classes.length;
  if (Number(state.K) !== K) {
    throw new PageError(`device.json: state K ${state.K} but ${K} classes`);
  }
  return {
    classes, K, J: Number(state.J), T, C,
    rate: Number(raw.sample_rate_hz || 0),
    channels: (raw.channels || (C === 6 ? WATCH_CHANNELS : [])).map(String),
    bound: number(raw.input_bound ?? Infinity),
    threshold: number(need(raw.threshold, "threshold")),
    controller: op.adaptive ? op : null,
    init: {belief: Float32Array.from(need(init.belief, "initial_state.belief").flat(Infinity)),
           age: Number(init.age), last: Number(init.last)},
    graphs: need(raw.graphs, "graphs"),
    artifact: String(raw.artifact_id),
  };
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function checkSession(session, spec) {
  const missing = INPUTS.filter((n) => !session.inputNames.includes(n))
    .concat(OUTPUTS.filter((n) => !session.outputNames.includes(n)));
  if (missing.length) {
    throw new PageError(`device.onnx is not a device artifact: it lacks ${missing.join(", ")} ` +
                        "(write one with `edgeswitch export-device`)");
  }
  // onnxruntime-web says the declared input shapes: their fixed sizes must be device.json's
  const want = {clip: [1, spec.T, spec.C], belief: [1, spec.J, spec.K], cloud_proba: [1, spec.K]};
  for (const m of session.inputMetadata || []) {
    const w = want[m.name], got = m.shape || [];
    if (w && got.length === w.length &&
        got.some((d, i) => i > 0 && typeof d === "number" && d !== w[i])) {
      throw new PageError(`device.onnx takes ${m.name} [${got}], device.json says [${w}]: ` +
                          "the two files come from different exports");
    }
  }
}

// ---- one step of the model ------------------------------------------------------------------

function initialState(spec) {
  return {belief: spec.init.belief.slice(), age: spec.init.age, last: spec.init.last};
}

async function run(model, clip, state, threshold, cloudProba) {
  const {session, spec} = model;
  const f32 = (data, dims) => new ort.Tensor("float32", Float32Array.from(data), dims);
  const feeds = {
    clip: f32(clip, [1, spec.T, spec.C]),
    belief: f32(state.belief, [1, spec.J, spec.K]),
    age: f32([state.age], [1]),
    last: f32([state.last], [1]),
    cloud_proba: f32(cloudProba || new Float32Array(spec.K), [1, spec.K]),
    cloud_mask: f32([cloudProba ? 1 : 0], [1]),
    threshold: f32([threshold], [1]),
  };
  const t0 = performance.now();
  const r = await session.run(feeds);
  const ms = performance.now() - t0;
  return {
    ms,
    edgeProba: Array.from(r.edge_proba.data), trust: r.trust.data[0],
    offload: Boolean(r.offload.data[0]), answer: Array.from(r.answer.data),
    next: {belief: Float32Array.from(r.belief_next.data), age: r.age_next.data[0],
           last: r.last_next.data[0]},
  };
}

const argmax = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);

// ---- the adaptive offload rate (device/controller.py, on the graph's trust) ----------------

class RateController {
  constructor(c) {  // device.json's operating_point: rate, step, knots, levels, tie_tolerance
    this.rate = Number(need(c.rate, "operating_point.rate"));
    this.step = Number(need(c.step, "operating_point.step"));
    this.knots = need(c.knots, "operating_point.knots").map(Number);
    this.levels = need(c.levels, "operating_point.levels").map(Number);
    this.tie = Number(c.tie_tolerance ?? 1e-6);  // device/spec.py TIE
    if (this.knots.length === 0 || this.knots.length !== this.levels.length) {
      throw new PageError("device.json: the controller's knots and levels do not pair up");
    }
    this.level = this.rate;
    this.seen = 0;
    this.offloaded = 0;
  }

  rank(x) {  // np.interp(x, knots, levels), operation for operation; one knot: mid-tie
    const k = this.knots, l = this.levels, n = k.length;
    // a trust within the tie tolerance of a knot is that knot (float32 cannot settle the tie)
    let near = 0;
    for (let i = 1; i < n; i++) if (Math.abs(k[i] - x) < Math.abs(k[near] - x)) near = i;
    if (Math.abs(k[near] - x) <= this.tie) x = k[near];
    if (n === 1) return x < k[0] ? 0 : x > k[0] ? 1 : 0.5;
    if (x < k[0]) return l[0];
    if (x >= k[n - 1]) return l[n - 1];
    let j = 0;
    while (k[j + 1] <= x) j++;  // k[j] <= x < k[j + 1]
    if (k[j] === x) return l[j];
    const slope = (l[j + 1] - l[j]) / (k[j + 1] - k[j]);
    return slope * (x - k[j]) + l[j];
  }

  decide(score) {  // offload this clip? (reads only the clips before it)
    this.seen += 1;
    const want = this.rank(score) < this.level;
    const capped = want && this.offloaded + 1 > this.rate * this.seen + 1e-9;
    const hit = want && !capped;
    this.offloaded += hit ? 1 : 0;
    if (!capped) this.level += this.step * (this.rate - (hit ? 1 : 0));
    return hit;
  }
}

// ---- the cloud (serve-cloud's POST /v1/classify, cloud/wire.py's encoding) ------------------

function b64OfFloats(values) {
  const bytes = new Uint8Array(Float32Array.from(values).buffer);  // little-endian everywhere
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function floatsOfB64(b64) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

// {proba} on an answer, {error} when the cloud failed; a cloud serving another model throws
async function askCloud(config, spec, clip) {
  if (!config.cloud_url) return {error: "no cloud configured (--cloud)"};
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), config.deadline_ms);
  let reply;
  try {
    // the deadline header: the server drops the request once nobody waits for it
    const headers = {"Content-Type": "application/json",
                     "X-Edgeswitch-Deadline-Ms": String(config.deadline_ms)};
    if (config.token) headers.Authorization = `Bearer ${config.token}`;
    const resp = await fetch(`${config.cloud_url}/v1/classify`, {
      method: "POST", headers, signal: abort.signal,
      body: JSON.stringify({clips: {shape: [1, spec.T, spec.C], dtype: "float32",
                                    b64: b64OfFloats(clip)}}),
    });
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      return {error: `HTTP ${resp.status} ${(body.error && body.error.message) || ""}`.trim()};
    }
    reply = await resp.json();
  } catch (e) {  // refused, unreachable, CORS refused, or past the deadline
    return {error: abort.signal.aborted ? `no answer within ${config.deadline_ms} ms`
                                        : `unreachable (${e.message})`};
  } finally {
    clearTimeout(timer);
  }
  if (JSON.stringify(reply.classes) !== JSON.stringify(spec.classes)) {
    throw new PageError(`the cloud (${reply.model}) answers over the classes ` +
                        `${JSON.stringify(reply.classes)}; this device artifact's are ` +
                        `${JSON.stringify(spec.classes)}: an artifact of another model`);
  }
  return {proba: Float32Array.from(reply.proba[0])};
}

// ---- the device: state, decisions, display ---------------------------------------------------

class Device {
  constructor(model, config) {
    this.model = model;
    this.config = config;
    this.spec = model.spec;
    this.controller = this.spec.controller ? new RateController(this.spec.controller) : null;
    this.states = new Map();  // stream -> its state (a new stream starts from the initial)
    this.counts = {clips: 0, offloaded: 0, unverified: 0};
  }

  async step(id, stream, clip) {
    const spec = this.spec;
    if (clip.length !== spec.T * spec.C) {
      throw new PageError(`clip ${id}: ${clip.length} values, the model takes ${spec.T} ` +
                          `samples x ${spec.C} channels`);
    }
    const bad = clip.findIndex((v) => !(Math.abs(v) <= spec.bound));  // NaN too
    if (bad >= 0) {
      throw new OutOfRange(`clip ${id} holds ${clip[bad]}, outside this model's input range ` +
                          `|x| <= ${spec.bound}`);
    }
    const before = this.states.get(stream) || initialState(spec);
    const threshold = spec.threshold;
    let out = await run(this.model, clip, before, threshold, null);
    const modelMs = out.ms;  // the step every clip pays (an answered offload runs again)
    const offload = this.controller ? this.controller.decide(out.trust) : out.offload;
    let by = "edge", cloudError = null;
    if (offload) {
      const reply = await askCloud(this.config, spec, clip);
      if (reply.proba) {
        out = await run(this.model, clip, before, threshold, reply.proba);
        by = "cloud";
      } else {
        by = "edge (cloud down)";
        cloudError = reply.error;
      }
    }
    this.states.delete(stream);  // re-inserted last: the least recently seen goes first
    this.states.set(stream, out.next);
    if (this.states.size > MAX_STREAMS) this.states.delete(this.states.keys().next().value);
    const record = {id, stream, label: spec.classes[argmax(out.answer)], by, offload,
                    verified: by !== "edge (cloud down)", trust: out.trust,
                    answer: out.answer, edge_proba: out.edgeProba, cloud_error: cloudError,
                    model_ms: modelMs};
    this.counts.clips += 1;
    this.counts.offloaded += offload ? 1 : 0;
    this.counts.unverified += record.verified ? 0 : 1;
    window.deviceLog.push(record);
    window.deviceLastClip = Array.from(clip);  // [T * C], what the model ran (tests read it)
    show(record, this.counts);
    return record;
  }
}

function show(r, counts) {
  $("answer").textContent = r.label;
  $("by").textContent = r.by;
  $("by").className = r.verified ? "sub" : "sub unverified";
  $("clips").textContent = String(counts.clips);
  $("clips").dataset.value = String(counts.clips);
  const rate = counts.offloaded / counts.clips;
  $("offload-rate").textContent = `${(100 * rate).toFixed(1)}%`;
  $("offload-rate").dataset.value = String(rate);
  $("offloaded").textContent = `${counts.offloaded} of ${counts.clips} clips offloaded`;
  $("unverified").textContent = String(counts.unverified);
  $("unverified").dataset.value = String(counts.unverified);
  if (r.cloud_error) $("cloud-error").textContent = r.cloud_error;
  const row = document.createElement("tr");
  for (const text of [r.id, r.label, r.by, r.trust.toFixed(3), r.model_ms.toFixed(1)]) {
    const td = document.createElement("td");
    td.textContent = text;  // text, never HTML
    row.appendChild(td);
  }
  if (!r.verified) row.className = "unverified";
  const body = document.querySelector("#last tbody");
  body.prepend(row);
  while (body.rows.length > SHOWN) body.deleteRow(-1);
}

function note(text) {
  $("source").textContent = text;
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

function fail(e) {
  const text = e instanceof PageError ? e.message : `${e.name || "Error"}: ${e.message || e}`;
  $("error").textContent = text;
  $("error").hidden = false;
  setStatus("failed", "stopped");
  for (const b of ["start-replay", "start-sensors", "stop"]) $(b).disabled = true;
}

// ---- sources: a recorded stream, or the phone's motion sensors -------------------------------

let stopped = false;

async function replay(device) {
  const data = await getJSON("/replay.json");
  const [n, T, C] = data.clips.shape;
  const spec = device.spec;
  if (T !== spec.T || C !== spec.C) {
    throw new PageError(`the replay's clips are [${T}, ${C}] (samples, channels); this model ` +
                        `takes [${spec.T}, ${spec.C}] (device.json clip_shape)`);
  }
  const rate = Number(data.sample_rate_hz || 0);  // 0: the file or device.json names none
  if (rate && spec.rate && Math.abs(rate - spec.rate) > 1e-6 * spec.rate) {
    throw new PageError(`the replay's clips are sampled at ${rate} Hz; this model takes ` +
                        `${spec.rate} Hz clips (device.json sample_rate_hz): resample them`);
  }
  if (data.classes && JSON.stringify(data.classes) !== JSON.stringify(spec.classes)) {
    throw new PageError(`the replay's classes ${JSON.stringify(data.classes)} are not the ` +
                        `model's ${JSON.stringify(spec.classes)}`);
  }
  const X = floatsOfB64(data.clips.b64);
  $("source").textContent = `replay: ${data.name} (${n} clips)`;
  setStatus("running", "replaying…");
  for (let i = 0; i < n && !stopped; i++) {
    await device.step(data.ids[i], data.streams[i], X.subarray(i * T * C, (i + 1) * T * C));
  }
  $("stop").disabled = true;
  setStatus("done", stopped ? "stopped" : `replayed ${n} clips`);
}

// One DeviceMotion sample as the model's channels: ax/ay/az (accelerometer, gravity
// included, in g) and wx/wy/wz (gyroscope, in rad/s), in device.json's order.
function motionChannels(spec, e) {
  const a = e.accelerationIncludingGravity || {}, w = e.rotationRate || {};
  const g = (v) => v / G, rad = (v) => (v * Math.PI) / 180;  // m/s² to g, deg/s to rad/s
  // rotationRate's alpha, beta, gamma turn about the device's x, y, z axes (as browsers
  // report them: Chromium and WebKit alike), in deg/s
  const by = {ax: g(a.x), ay: g(a.y), az: g(a.z),
              wx: rad(w.alpha), wy: rad(w.beta), wz: rad(w.gamma)};
  return spec.channels.map((c) => Number(by[c] ?? NaN));
}

async function sensors(device) {
  const spec = device.spec;
  if (!spec.rate) {
    throw new PageError("device.json names no sample rate: export the artifact with " +
                        "`edgeswitch export-device ... --sample-rate HZ`");
  }
  if (spec.channels.length !== spec.C || spec.channels.some((c) => !WATCH_CHANNELS.includes(c))) {
    throw new PageError(`this model's channels (${spec.channels.join(", ") || "unnamed"}) are ` +
                        "not a phone's accelerometer and gyroscope");
  }
  if (!window.isSecureContext || typeof DeviceMotionEvent === "undefined") {
    throw new PageError("motion sensors need https (or localhost) and a device that has them");
  }
  if (typeof DeviceMotionEvent.requestPermission === "function" &&
      await DeviceMotionEvent.requestPermission() !== "granted") {
    throw new PageError("motion sensor access was refused");
  }
  // resample to the model's rate: the latest reading at each tick of 1/rate seconds
  const dt = 1000 / spec.rate;
  let latest = null, buffer = [], next = null, busy = false, count = 0;
  const onMotion = (e) => {
    const now = e.timeStamp;
    const values = motionChannels(spec, e);
    if (values.some((v) => !Number.isFinite(v))) return;
    if (next === null) next = now;
    while (latest && now >= next) {
      buffer.push(latest);
      next += dt;
    }
    latest = values;
    if (buffer.length >= spec.T && !busy) {
      const clip = Float32Array.from(buffer.slice(0, spec.T).flat());
      buffer = buffer.slice(spec.T);
      busy = true;
      count += 1;
      device.step(`live-${count}`, "live", clip)
        .catch((e) => (e instanceof OutOfRange ? note(e.message) : fail(e)))
        .finally(() => { busy = false; });
    } else if (buffer.length > 2 * spec.T) {
      buffer = buffer.slice(-spec.T);  // the model fell behind: drop, never queue up
    }
  };
  window.addEventListener("devicemotion", onMotion);
  $("source").textContent = `motion sensors at ${spec.rate} Hz`;
  setStatus("running", "listening…");
  await new Promise((resolve) => {
    $("stop").addEventListener("click", resolve, {once: true});
  });
  window.removeEventListener("devicemotion", onMotion);
}

// ---- start --------------------------------------------------------------------------------

async function getJSON(url) {
  const resp = await fetch(url, {cache: "no-store"});
  if (!resp.ok) throw new PageError(`${url}: HTTP ${resp.status}`);
  return resp.json();
}

async function start() {
  if (typeof ort === "undefined") {
    throw new PageError("onnxruntime-web did not load (/ort/ort.wasm.min.js): see the page " +
                        "server's output");
  }
  const config = await getJSON("/config.json");
  const spec = readSpec(await getJSON("/model/device.json"));
  const variant = new URLSearchParams(location.search).get("graph") || "float";
  if (!Object.hasOwn(GRAPHS, variant)) {
    throw new PageError(`?graph=${variant}: the page runs graph=float or graph=int8`);
  }
  const graph = spec.graphs[variant], file = GRAPHS[variant];
  if (!graph) {
    throw new PageError(`this artifact has no ${variant} graph (${file}): export it with ` +
                        "`edgeswitch export-device ... --int8`");
  }
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = 1;  // no SharedArrayBuffer, no cross-origin isolation needed
  const resp = await fetch(`/model/${file}`, {cache: "no-store"});
  if (!resp.ok) throw new PageError(`/model/${file}: HTTP ${resp.status}`);
  const bytes = new Uint8Array(await resp.arrayBuffer());
  if (await sha256Hex(bytes) !== String(graph.sha256)) {
    throw new PageError(`${file} is not the graph device.json describes (artifact ` +
                        `${spec.artifact}; the SHA-256 differs): the two files come from ` +
                        "different exports; copy the exported folder whole");
  }
  const session = await ort.InferenceSession.create(bytes, {executionProviders: ["wasm"]});
  checkSession(session, spec);
  const device = new Device({session, spec}, config);
  $("model").textContent = `artifact ${spec.artifact}` +
    (variant === "float" ? "" : ` (${variant} graph)`) + `: ${spec.K} classes, clips ` +
    `${spec.T} x ${spec.C}` +
    (config.cloud_url ? `, cloud ${config.cloud_url}` : ", no cloud");
  const begin = (source) => () => {
    stopped = false;
    for (const b of ["start-replay", "start-sensors"]) $(b).disabled = true;
    $("stop").disabled = false;
    source(device).catch(fail);
  };
  $("start-replay").disabled = !config.replay;
  $("start-sensors").disabled = false;
  $("start-replay").addEventListener("click", begin(replay));
  $("start-sensors").addEventListener("click", begin(sensors));
  $("stop").addEventListener("click", () => { stopped = true; });
  setStatus("ready", "ready");
}

start().catch(fail);
