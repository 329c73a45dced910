// edgeswitch device page: the device artifact (device.onnx, device.json) stepped clip by clip
// in the browser with onnxruntime-web, offloading to serve-cloud when the model asks.
//
// The loop ("step, then observe"), per clip:
//   out = run(clip, state, no cloud answer)
//   if out.offload: POST the clip to the cloud; if it answered:
//       out = run(clip, state, the cloud's answer)
//   state = out.*_next; show argmax(out.answer)
// A cloud that fails or times out leaves the first run's outputs: the edge answer stands,
// flagged "edge (cloud down)". Every decision is kept in window.deviceLog (what the tests read).
"use strict";

const INPUTS = ["clip", "belief", "age", "last", "cloud_proba", "cloud_mask", "threshold"];
const OUTPUTS = ["edge_proba", "trust", "offload", "answer", "belief_next", "age_next",
                 "last_next"];
const NEVER = 1e9;       // `age` of a stream the cloud never answered
const SHOWN = 20;        // rows in the latest-clips table
const G = 9.80665;       // m/s² per g

const $ = (id) => document.getElementById(id);
window.deviceLog = [];

class PageError extends Error {}  // a problem to show as it is, without a stack

// ---- the artifact ---------------------------------------------------------------------------

function pick(obj, names, what) {
  for (const n of names) if (obj && obj[n] !== undefined && obj[n] !== null) return obj[n];
  throw new PageError(`device.json has no ${what} (looked for ${names.join(", ")})`);
}

// device.json, the few things the loop needs (see docs/deployment.md "Device in the browser")
function readSpec(raw) {
  const classes = pick(raw, ["classes"], "classes").map(String);
  const shape = pick(raw, ["clip_shape"], "clip shape [T, C]");
  const init = pick(raw, ["initial_state", "state"], "initial state");
  const belief = pick(init, ["belief"], "initial belief").flat(Infinity).map(Number);
  const K = classes.length;
  if (belief.length === 0 || belief.length % K) {
    throw new PageError(`device.json: the initial belief holds ${belief.length} values, not ` +
                        `a whole number of rows of ${K} classes`);
  }
  const op = raw.operating_point || raw.controller || {};
  return {
    raw, classes, K, J: belief.length / K, T: Number(shape[0]), C: Number(shape[1]),
    rate: Number(raw.sample_rate_hz ?? raw.sample_rate ?? 0),
    channels: (raw.channels || []).map(String),
    units: raw.units || {},
    threshold: Number(pick(raw, ["threshold"], "threshold")),
    controller: op.adaptive ? op : null,
    init: {belief: Float32Array.from(belief), age: Number(init.age ?? NEVER),
           last: Number(init.last ?? -1)},
    ids: raw.ids || {},
  };
}

function checkSession(session, spec) {
  const missing = INPUTS.filter((n) => !session.inputNames.includes(n))
    .concat(OUTPUTS.filter((n) => !session.outputNames.includes(n)));
  if (missing.length) {
    throw new PageError(`device.onnx is not a device artifact: it lacks ${missing.join(", ")} ` +
                        "(write one with `edgeswitch export-device`)");
  }
  // onnxruntime-web >= 1.22 says the declared input shapes: they must be device.json's
  for (const m of session.inputMetadata || []) {
    const want = {clip: [1, spec.T, spec.C], belief: [1, spec.J, spec.K],
                  cloud_proba: [1, spec.K]}[m.name];
    const got = m.shape || [];
    if (want && got.length === 3 - (m.name === "cloud_proba") &&
        got.some((d, i) => typeof d === "number" && d !== want[i])) {
      throw new PageError(`device.onnx takes ${m.name} [${got}], device.json says [${want}]: ` +
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
  const r = await session.run(feeds);
  return {
    edgeProba: Array.from(r.edge_proba.data), trust: r.trust.data[0],
    offload: Boolean(r.offload.data[0]), answer: Array.from(r.answer.data),
    next: {belief: Float32Array.from(r.belief_next.data), age: r.age_next.data[0],
           last: r.last_next.data[0]},
  };
}

const argmax = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);

// ---- the offload rate controller (switcher.calibrate.RateController, on the model's trust) --

class RateController {
  constructor(c) {
    this.rate = Number(c.rate);
    this.step = Number(c.step);
    this.knots = c.knots.map(Number);
    this.levels = c.levels.map(Number);
    this.level = this.rate;
    this.seen = 0;
    this.offloaded = 0;
  }

  rank(score) {  // np.interp(score, knots, levels); a single knot ranks mid-tie
    const k = this.knots, l = this.levels;
    if (k.length === 1) return score < k[0] ? 0 : score > k[0] ? 1 : 0.5;
    if (score <= k[0]) return l[0];
    if (score >= k[k.length - 1]) return l[l.length - 1];
    let i = 1;
    while (k[i] < score) i++;
    return l[i - 1] + (l[i] - l[i - 1]) * (score - k[i - 1]) / (k[i] - k[i - 1]);
  }

  decide(score) {
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
    const headers = {"Content-Type": "application/json"};
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
    this.stream = null;
    this.state = initialState(this.spec);
    this.counts = {clips: 0, offloaded: 0, unverified: 0};
  }

  async step(id, stream, clip) {
    const spec = this.spec;
    if (clip.length !== spec.T * spec.C) {
      throw new PageError(`clip ${id}: ${clip.length} values, the model takes ${spec.T} ` +
                          `samples x ${spec.C} channels`);
    }
    if (stream !== this.stream) {  // a new stream starts from the initial state
      this.stream = stream;
      this.state = initialState(spec);
    }
    const threshold = spec.threshold;
    let out = await run(this.model, clip, this.state, threshold, null);
    const offload = this.controller ? this.controller.decide(out.trust) : out.offload;
    let by = "edge", cloudError = null;
    if (offload) {
      const reply = await askCloud(this.config, spec, clip);
      if (reply.proba) {
        out = await run(this.model, clip, this.state, threshold, reply.proba);
        by = "cloud";
      } else {
        by = "edge (cloud down)";
        cloudError = reply.error;
      }
    }
    this.state = out.next;
    const record = {id, stream, label: spec.classes[argmax(out.answer)], by, offload,
                    verified: by !== "edge (cloud down)", trust: out.trust,
                    answer: out.answer, edge_proba: out.edgeProba, cloud_error: cloudError};
    this.counts.clips += 1;
    this.counts.offloaded += offload ? 1 : 0;
    this.counts.unverified += record.verified ? 0 : 1;
    window.deviceLog.push(record);
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
  for (const text of [r.id, r.label, r.by, r.trust.toFixed(3)]) {
    const td = document.createElement("td");
    td.textContent = text;  // text, never HTML
    row.appendChild(td);
  }
  if (!r.verified) row.className = "unverified";
  const body = document.querySelector("#last tbody");
  body.prepend(row);
  while (body.rows.length > SHOWN) body.deleteRow(-1);
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

// One DeviceMotion sample as the model's channels: names ax/ay/az (accelerometer, gravity
// included) and wx/wy/wz (gyroscope); units g and rad/s unless device.json says m/s² or deg/s.
function motionChannels(spec, e) {
  const a = e.accelerationIncludingGravity || {}, w = e.rotationRate || {};
  const accScale = spec.units.accelerometer === "m/s2" ? 1 : 1 / G;
  const gyroScale = spec.units.gyroscope === "deg/s" ? 1 : Math.PI / 180;
  const by = {ax: a.x * accScale, ay: a.y * accScale, az: a.z * accScale,
              wx: w.beta * gyroScale, wy: w.gamma * gyroScale, wz: w.alpha * gyroScale};
  return spec.channels.map((c) => Number(by[c] ?? NaN));
}

async function sensors(device) {
  const spec = device.spec;
  if (!spec.rate || spec.channels.length !== spec.C ||
      spec.channels.some((c) => !["ax", "ay", "az", "wx", "wy", "wz"].includes(c))) {
    throw new PageError(`this model's channels (${spec.channels.join(", ") || "unnamed"}) at ` +
                        `${spec.rate || "?"} Hz are not a phone's accelerometer and gyroscope`);
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
      device.step(`live-${count}`, "live", clip).catch(fail).finally(() => { busy = false; });
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
  const config = await getJSON("/config.json");
  const spec = readSpec(await getJSON("/model/device.json"));
  ort.env.wasm.wasmPaths = "/ort/";
  ort.env.wasm.numThreads = 1;  // no SharedArrayBuffer, no cross-origin isolation needed
  const session = await ort.InferenceSession.create("/model/device.onnx",
                                                    {executionProviders: ["wasm"]});
  checkSession(session, spec);
  const device = new Device({session, spec}, config);
  $("model").textContent = `${spec.classes.length} classes, clips ${spec.T} x ${spec.C}` +
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
