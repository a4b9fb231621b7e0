// The dlzoo playground: plain JavaScript, no build step, no dependency. Every call goes to the
// service's public endpoints, relative to this page (so the page works behind a path prefix).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], drawn: false, token: sessionStorage.getItem("dlzoo-token") };

// --- HTTP ---------------------------------------------------------------------------------------

class ApiError extends Error {}

async function errorText(resp) {
  // {"error": ...} from this service; BentoML's own errors may be a list or {"detail": ...}
  try {
    const body = await resp.json();
    if (Array.isArray(body)) return body.map((e) => e.error || e.msg || JSON.stringify(e)).join("; ");
    return body.error || JSON.stringify(body.detail || body);
  } catch (e) {
    return resp.statusText;
  }
}

async function api(path, { json, form, method = "POST", signal } = {}) {
  const init = { method, signal, headers: {} };
  if (state.token) init.headers.authorization = `Bearer ${state.token}`; // DLZOO_API_TOKEN
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["content-type"] = "application/json";
  } else if (form !== undefined) {
    init.body = form;
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    $("token-form").hidden = false;
    throw new ApiError("401: this server needs its API token (enter it at the top of the page)");
  }
  if (!resp.ok) throw new ApiError(`${resp.status}: ${await errorText(resp)}`);
  return resp;
}

function setupToken() {
  $("token-form").hidden = !state.token;
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("token").value.trim() || null;
    if (state.token) sessionStorage.setItem("dlzoo-token", state.token);
    else sessionStorage.removeItem("dlzoo-token");
    loadModels().then(() => {
      sample();
      loadPath();
    });
  });
}

function say(id, text, isError = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// One request at a time per task; a change while one runs schedules exactly one more.
function latest(run) {
  let running = false;
  let again = false;
  return async function go() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await run();
    } finally {
      running = false;
      if (again) {
        again = false;
        go();
      }
    }
  };
}

function blobUrl(img, blob) {
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  img.dataset.url = URL.createObjectURL(blob);
  img.src = img.dataset.url;
}

// --- Models -------------------------------------------------------------------------------------

function formatValue(v) {
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  if (v && typeof v === "object")
    return Object.entries(v).map(([k, x]) => `${k} ${formatValue(x)}`).join(", ");
  return String(v);
}

function modelCard(m) {
  const ref = m.version == null ? m.name : `${m.name}@${m.version}`;
  const card = el("article", { class: `model status-${m.status}`, "aria-label": ref });
  card.append(el("h3", {}, el("span", { text: ref }), " ", el("span", { class: "badge", text: m.status })));
  const facts = el("dl");
  const add = (k, v) => {
    if (v === undefined || v === null || v === "") return;
    facts.append(el("dt", { text: k }), el("dd", { text: formatValue(v) }));
  };
  add("version", m.version);
  add("task", m.task);
  add("architecture", m.architecture);
  add("data set", m.dataset);
  add("provider", m.provider);
  add("created", m.created);
  if (m.reason) add("reason", m.reason);
  card.append(facts);
  if (m.metrics && Object.keys(m.metrics).length) {
    const details = el("details", {}, el("summary", { text: "metrics" }));
    const table = el("dl", { class: "metrics" });
    for (const [k, v] of Object.entries(m.metrics)) table.append(el("dt", { text: k }), el("dd", { text: formatValue(v) }));
    details.append(table);
    card.append(details);
  }
  if (m.version != null) {
    const pics = el("div", { class: "pictures" });
    card.append(pics);
    loadPictures(m, pics);
  }
  return card;
}

async function loadPictures(m, into) {
  const base = `models/${encodeURIComponent(m.name)}/${m.version}/pictures`;
  try {
    const names = await (await api(base, { method: "GET" })).json();
    for (const name of names) {
      // fetched rather than linked, so that an API token goes along
      const img = el("img", { alt: `${m.name}@${m.version}: ${name.replace(/\.png$/, "").replace(/_/g, " ")}` });
      into.append(el("figure", {}, img, el("figcaption", { text: name })));
      blobUrl(img, await (await api(`${base}/${encodeURIComponent(name)}`, { method: "GET" })).blob());
    }
  } catch (e) {
    into.append(el("p", { class: "error", text: `pictures: ${e.message}` }));
  }
}

function fillSelect(id, tasks) {
  const select = $(id);
  const keep = select.value;
  const names = [...new Set(state.models.filter((m) => tasks.includes(m.task) && m.status === "ready").map((m) => m.name))];
  select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
  if (names.includes(keep)) select.value = keep;
  return names;
}

async function loadModels() {
  say("models-status", "loading…");
  try {
    state.models = await (await api("models", { method: "GET" })).json();
  } catch (e) {
    say("models-status", `Could not list the models: ${e.message}`, true);
    return;
  }
  const list = $("models-list");
  list.replaceChildren(...state.models.map(modelCard));
  const failed = state.models.filter((m) => m.status === "failed").length;
  say("models-status", `${state.models.length} versions, ${failed} failed.`);
  const classifiers = fillSelect("classify-model", ["classify"]);
  if (classifiers.includes("lenet5")) $("classify-model").value = $("classify-model").value || "lenet5";
  fillSelect("gen-model", ["language_model"]);
  fillSelect("tr-model", ["seq2seq"]);
  fillSelect("lat-model", ["vae", "gan"]);
  for (const [id, status, what] of [
    ["classify-model", "classify-status", "classifier"],
    ["gen-model", "gen-status", "language model"],
    ["tr-model", "tr-status", "seq2seq model"],
    ["lat-model", "lat-status", "VAE or GAN"],
  ]) {
    if (!$(id).options.length) say(status, `No ${what} is ready yet (Refresh the models when one is).`, true);
  }
}

// --- Classify: the drawing pad ------------------------------------------------------------------

const pad = { canvas: null, ctx: null, down: false, last: null, pen: { x: 140, y: 140 } };

function clearPad() {
  pad.ctx.fillStyle = "#fff";
  pad.ctx.fillRect(0, 0, pad.canvas.width, pad.canvas.height);
  state.drawn = false;
  $("classify-file").value = "";
  $("classify-top1").textContent = "";
  $("classify-bars").replaceChildren();
}

function stroke(from, to) {
  const ctx = pad.ctx;
  ctx.strokeStyle = "#000";
  ctx.fillStyle = "#000";
  ctx.lineWidth = Number($("pad-width").value);
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
  state.drawn = true;
  drawingChanged();
}

function padPoint(event) {
  const r = pad.canvas.getBoundingClientRect();
  return { x: ((event.clientX - r.left) * pad.canvas.width) / r.width, y: ((event.clientY - r.top) * pad.canvas.height) / r.height };
}

function setupPad() {
  pad.canvas = $("pad");
  pad.ctx = pad.canvas.getContext("2d");
  clearPad();
  pad.canvas.addEventListener("pointerdown", (e) => {
    $("classify-file").value = ""; // the bars are the drawing's from now on
    pad.down = true;
    pad.last = padPoint(e);
    pad.canvas.setPointerCapture(e.pointerId);
    stroke(pad.last, pad.last);
    e.preventDefault();
  });
  pad.canvas.addEventListener("pointermove", (e) => {
    if (!pad.down) return;
    const p = padPoint(e);
    stroke(pad.last, p);
    pad.last = p;
    pad.pen = p;
  });
  const up = () => {
    pad.down = false;
  };
  pad.canvas.addEventListener("pointerup", up);
  pad.canvas.addEventListener("pointercancel", up);
  pad.canvas.addEventListener("keydown", (e) => {
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (e.key === "Delete" || e.key === "Backspace") {
      clearPad();
      e.preventDefault();
      return;
    }
    if (!(e.key in moves)) return;
    e.preventDefault();
    const [dx, dy] = moves[e.key];
    const step = 10;
    const from = { ...pad.pen };
    const to = { x: Math.min(pad.canvas.width, Math.max(0, from.x + dx * step)), y: Math.min(pad.canvas.height, Math.max(0, from.y + dy * step)) };
    if (!e.shiftKey) stroke(from, to);
    pad.pen = to;
  });
  $("pad-clear").addEventListener("click", clearPad);
}

function padBlob() {
  return new Promise((resolve) => pad.canvas.toBlob(resolve, "image/png"));
}

async function classifyImage(blob, filename) {
  const model = $("classify-model").value;
  if (!model) return;
  const form = new FormData();
  form.append("image", blob, filename);
  form.append("model", model);
  form.append("top_k", String(Math.min(Number($("classify-topk").value) || 5, labelsOf(model))));
  try {
    const out = await (await api("classify", { form })).json();
    showPredictions(out);
    say("classify-status", `${out.model}@${out.version} on ${out.provider}: ${out.timings_ms.inference.toFixed(1)} ms inference`);
  } catch (e) {
    say("classify-status", `Classify failed: ${e.message}`, true);
  }
}

function labelsOf(name) {
  const m = state.models.find((x) => x.name === name && x.status === "ready" && x.labels);
  return m ? m.labels.length : 5;
}

function showPredictions(out) {
  const best = out.predictions[0];
  $("classify-top1").textContent = `${best.label} (${(100 * best.probability).toFixed(1)}%)`;
  $("classify-bars").replaceChildren(
    ...out.predictions.map((p) => {
      const pct = (100 * p.probability).toFixed(1);
      const bar = el("span", { class: "bar", "aria-hidden": "true" });
      bar.style.width = `${pct}%`;
      return el("li", {}, el("span", { class: "label", text: p.label }), el("span", { class: "track" }, bar), el("span", { class: "pct", text: `${pct}%` }));
    }),
  );
}

const classifyDrawing = latest(async () => {
  if (!state.drawn) return;
  await classifyImage(await padBlob(), "drawing.png");
});

const reconstructDrawing = latest(async () => {
  const vae = state.models.find((m) => m.task === "vae" && m.status === "ready");
  if (!vae) {
    say("recon-status", "No VAE is ready.", true);
    return;
  }
  if (!state.drawn) {
    say("recon-status", "Draw something in the Classify panel first.");
    return;
  }
  const form = new FormData();
  form.append("image", await padBlob(), "drawing.png");
  form.append("model", vae.name);
  form.append("scale", "6");
  try {
    blobUrl($("recon"), await (await api("reconstruct", { form })).blob());
    say("recon-status", `${vae.name}: your drawing as it sees it (left) and its reconstruction (right).`);
  } catch (e) {
    say("recon-status", `Reconstruct failed: ${e.message}`, true);
  }
});

const drawingChanged = debounce(() => {
  classifyDrawing();
  reconstructDrawing();
}, 150);

// --- Generate: a token stream read with fetch -----------------------------------------------------

const gen = { controller: null, tokens: [], selected: -1 };

function* sseEvents(buffer) {
  // complete "event: x\ndata: {...}\n\n" blocks; returns what is left
  let at;
  while ((at = buffer.text.indexOf("\n\n")) >= 0) {
    const block = buffer.text.slice(0, at);
    buffer.text = buffer.text.slice(at + 2);
    let event = "message";
    let data = "";
    for (const line of block.split("\n")) {
      if (line.startsWith("event: ")) event = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    yield { event, data: data ? JSON.parse(data) : {} };
  }
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function generateBody() {
  const body = {
    model: $("gen-model").value,
    prompt: $("gen-prompt").value,
    max_new_tokens: Number($("gen-max").value),
    temperature: Number($("gen-temperature").value),
    top_p: Number($("gen-topp").value),
  };
  const topK = numberOrNull("gen-topk");
  const seed = numberOrNull("gen-seed");
  if (topK !== null) body.top_k = topK;
  if (seed !== null) body.seed = seed;
  if ($("gen-alternatives").checked) body.alternatives = 5;
  return body;
}

function appendTokens(text, alternatives) {
  const out = $("gen-output");
  if (!alternatives) {
    out.append(text);
    return;
  }
  // one span per token with its alternatives (a piece released after a stop-string hold may
  // carry several tokens: its characters share them out in order)
  const chars = [...text];
  alternatives.forEach((alts, i) => {
    const piece = i === alternatives.length - 1 ? chars.slice(i).join("") : chars[i] || "";
    const span = el("span", { class: "tok", "data-i": String(gen.tokens.length), text: piece });
    gen.tokens.push(alts);
    out.append(span);
  });
}

function showAlternatives(i) {
  const view = $("gen-alternatives-view");
  const spans = $("gen-output").querySelectorAll(".tok");
  spans.forEach((s) => s.classList.toggle("selected", Number(s.dataset.i) === i));
  if (i < 0 || i >= gen.tokens.length) {
    view.replaceChildren();
    return;
  }
  gen.selected = i;
  const chosen = spans[i] ? spans[i].textContent : "";
  const rows = gen.tokens[i].map((a) => {
    const bar = el("span", { class: "bar", "aria-hidden": "true" });
    bar.style.width = `${(100 * a.probability).toFixed(1)}%`;
    const shown = a.text === "\n" ? "↵" : a.text === " " ? "␣" : a.text;
    return el("li", { class: a.text === chosen ? "chosen" : "" }, el("span", { class: "label", text: shown }), el("span", { class: "track" }, bar), el("span", { class: "pct", text: `${(100 * a.probability).toFixed(1)}%` }));
  });
  view.replaceChildren(el("p", { text: `Token ${i + 1}: the model's five most likely characters` }), el("ol", { class: "bars" }, ...rows));
}

async function startGeneration(event) {
  event.preventDefault();
  if (gen.controller) return;
  const body = generateBody();
  const out = $("gen-output");
  out.replaceChildren();
  gen.tokens = [];
  gen.selected = -1;
  showAlternatives(-1);
  gen.controller = new AbortController();
  $("gen-start").disabled = true;
  $("gen-stop").disabled = false;
  say("gen-status", "generating…");
  out.dataset.state = "running";
  let finished = null;
  try {
    const resp = await api("generate_stream", { json: body, signal: gen.controller.signal });
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    const buffer = { text: "" };
    let start = {};
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer.text += decoder.decode(value, { stream: true });
      for (const e of sseEvents(buffer)) {
        if (e.event === "start") {
          start = e.data;
          say("gen-status", `${start.model}@${start.version}, seed ${start.seed}: generating…`);
        } else if (e.event === "message") {
          appendTokens(e.data.text, e.data.alternatives);
        } else if (e.event === "done") {
          finished = e.data;
        } else if (e.event === "error") {
          throw new ApiError(`${e.data.status}: ${e.data.detail}`);
        }
      }
    }
    if (finished) {
      const t = finished.timings_ms;
      say("gen-status", `${start.model}@${start.version}, seed ${start.seed}: ${finished.tokens} tokens, ended by ${finished.finish_reason} (first token ${t.first_token} ms, all ${t.total} ms).`);
      out.dataset.state = "done";
    } else {
      say("gen-status", "The stream ended without its last event.", true);
      out.dataset.state = "error";
    }
  } catch (e) {
    if (e.name === "AbortError") {
      say("gen-status", "Stopped: the server cancelled the generation.");
      out.dataset.state = "stopped";
    } else {
      say("gen-status", `Generate failed: ${e.message}`, true);
      out.dataset.state = "error";
    }
  } finally {
    gen.controller = null;
    $("gen-start").disabled = false;
    $("gen-stop").disabled = true;
  }
}

function setupGenerate() {
  $("generate-form").addEventListener("submit", startGeneration);
  // closing the connection is what ends the generation on the server (it cancels at its next step)
  $("gen-stop").addEventListener("click", () => gen.controller && gen.controller.abort());
  const out = $("gen-output");
  const pick = (e) => {
    const t = e.target.closest(".tok");
    if (t) showAlternatives(Number(t.dataset.i));
  };
  out.addEventListener("mouseover", pick);
  out.addEventListener("click", pick);
  out.addEventListener("keydown", (e) => {
    if (!gen.tokens.length) return;
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      e.preventDefault();
      const d = e.key === "ArrowRight" ? 1 : -1;
      const start = gen.selected < 0 ? (d > 0 ? -1 : gen.tokens.length) : gen.selected;
      showAlternatives(Math.max(0, Math.min(gen.tokens.length - 1, start + d)));
    }
  });
}

// --- Translate dates: beam candidates and the attention heat map ---------------------------------

function heatmap(attention) {
  const table = $("tr-heatmap");
  const caption = table.querySelector("caption");
  const head = el("tr", {}, el("td", { class: "corner" }));
  const visible = (c) => (c === " " ? "␣" : c);
  for (const c of attention.source) head.append(el("th", { scope: "col", text: visible(c) }));
  const body = el("tbody");
  attention.weights.forEach((row, i) => {
    const tr = el("tr", {}, el("th", { scope: "row", text: visible(attention.output[i]) }));
    row.forEach((w, j) => {
      const td = el("td", { title: `${attention.output[i]} ← ${attention.source[j]}: ${w.toFixed(3)}`, "data-w": String(w) });
      td.style.setProperty("--w", String(Math.sqrt(w))); // a square-root scale shows small weights
      td.textContent = w >= 0.1 ? w.toFixed(1).replace(/^0/, "") : "";
      tr.append(td);
    });
    body.append(tr);
  });
  table.replaceChildren(caption, el("thead", {}, head), body);
}

async function translate(event) {
  event.preventDefault();
  const beam = Number($("tr-beam").value);
  const body = { model: $("tr-model").value, text: $("tr-text").value, beam_width: beam, num_return: beam, attention: true };
  say("tr-status", "translating…");
  try {
    const out = await (await api("translate", { json: body })).json();
    const rows = out.candidates.map((c, i) => {
      const show = el("button", { type: "button", text: "show" });
      show.addEventListener("click", () => pickCandidate(out, i));
      const tr = el("tr", { "data-i": String(i) }, el("td", { class: "mono", text: c.text }), el("td", { text: c.log_prob.toFixed(4) }), el("td", { text: c.complete ? "yes" : "no (cut)" }), el("td", {}, show));
      tr.addEventListener("click", () => pickCandidate(out, i));
      return tr;
    });
    $("tr-candidates").querySelector("tbody").replaceChildren(...rows);
    pickCandidate(out, 0);
    say("tr-status", `${out.model}@${out.version}: “${out.output}” (${out.timings_ms.total.toFixed(1)} ms${out.unknown_chars.length ? `; unknown characters: ${out.unknown_chars.join(" ")}` : ""}).`);
  } catch (e) {
    say("tr-status", `Translate failed: ${e.message}`, true);
  }
}

function pickCandidate(out, i) {
  $("tr-candidates").querySelectorAll("tbody tr").forEach((tr) => tr.classList.toggle("selected", Number(tr.dataset.i) === i));
  heatmap(out.candidates[i].attention);
}

// --- Sample / interpolate -----------------------------------------------------------------------

const interp = { frames: [], size: null };

async function sample(event) {
  if (event) event.preventDefault();
  const model = $("lat-model").value;
  if (!model) return;
  const body = { model, count: Number($("lat-count").value), scale: 3 };
  const seed = numberOrNull("lat-seed");
  if (seed !== null) body.seed = seed;
  say("lat-status", "sampling…");
  try {
    const resp = await api("sample", { json: body });
    blobUrl($("lat-grid"), await resp.blob());
    $("lat-seed").value = resp.headers.get("X-Seed");
    say("lat-status", `${resp.headers.get("X-Model")}, seed ${resp.headers.get("X-Seed")}.`);
  } catch (e) {
    say("lat-status", `Sample failed: ${e.message}`, true);
  }
}

function renderFrame(i) {
  const frame = interp.frames[i];
  if (!frame) return;
  const gray = !Array.isArray(frame[0][0]);
  const [h, w] = gray ? [frame.length, frame[0].length] : [frame[0].length, frame[0][0].length];
  const scale = 8;
  const canvas = document.createElement("canvas");
  canvas.width = w * scale;
  canvas.height = h * scale;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const rgb = gray ? [frame[y][x], frame[y][x], frame[y][x]] : [frame[0][y][x], frame[1][y][x], frame[2][y][x]];
      const k = 4 * (y * w + x);
      rgb.forEach((v, c) => (image.data[k + c] = Math.round(255 * Math.min(1, Math.max(0, v)))));
      image.data[k + 3] = 255;
    }
  const small = document.createElement("canvas");
  small.width = w;
  small.height = h;
  small.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  const img = $("interp-frame");
  img.src = canvas.toDataURL("image/png");
  img.alt = `Frame ${i + 1} of ${interp.frames.length} on the path from seed ${$("interp-from").value} to seed ${$("interp-to").value}`;
  $("interp-slider").setAttribute("aria-valuetext", `frame ${i + 1} of ${interp.frames.length}`);
}

async function loadPath(event) {
  if (event) event.preventDefault();
  const model = $("lat-model").value;
  if (!model) return;
  const steps = Number($("interp-steps").value);
  const body = { model, seed_from: Number($("interp-from").value), seed_to: Number($("interp-to").value), steps, method: $("interp-method").value, format: "json" };
  say("interp-status", "decoding the path…");
  try {
    const out = await (await api("interpolate", { json: body })).json();
    interp.frames = out.images;
    const slider = $("interp-slider");
    slider.max = String(out.images.length - 1);
    slider.value = Math.min(Number(slider.value), out.images.length - 1);
    renderFrame(Number(slider.value));
    say("interp-status", `${out.model}@${out.version}: ${out.images.length} points by ${out.method}; move the slider.`);
  } catch (e) {
    say("interp-status", `Interpolate failed: ${e.message}`, true);
  }
}

function setupLatent() {
  $("sample-form").addEventListener("submit", sample);
  $("lat-random").addEventListener("click", () => {
    $("lat-seed").value = String(Math.floor(Math.random() * 2 ** 32));
    sample();
  });
  $("interp-form").addEventListener("submit", loadPath);
  $("interp-slider").addEventListener("input", (e) => renderFrame(Number(e.target.value)));
  $("lat-model").addEventListener("change", () => {
    sample();
    loadPath();
  });
  $("recon-go").addEventListener("click", () => reconstructDrawing());
}

// --- start --------------------------------------------------------------------------------------

async function main() {
  setupToken();
  setupPad();
  setupGenerate();
  setupLatent();
  $("models-refresh").addEventListener("click", loadModels);
  $("translate-form").addEventListener("submit", translate);
  $("classify-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) classifyImage(file, file.name);
  });
  $("classify-model").addEventListener("change", () => classifyDrawing());
  $("classify-topk").addEventListener("change", () => classifyDrawing());
  await loadModels();
  if ($("lat-model").value) {
    sample();
    loadPath();
  }
  document.body.dataset.ready = "true";
}

main();
