// The annotation page: talks to the JSON API of isegm/app/server.py. Requests run one at a time
// (a queue), so clicks reach the server in the order they were made.
"use strict";

const PALETTE = ["#00e5ff", "#ffd23f", "#7bd88f", "#ff4f81", "#c77dff", "#ff8c42", "#2f6bff", "#f25f5c"];
const POSITIVE = "#2ecc40";
const NEGATIVE = "#ff4136";
const LATENCY_WINDOW = 20;   // clicks the median latency is taken over
const TOKEN_HEADER = "X-SkipClick-Token";
const TOKEN_KEY = "skipclick-token";

const $ = (id) => document.getElementById(id);
const state = {
  session: null, token: null, config: null, image: null, objects: [], current: null, unsaved: [],
  masks: new Map(),          // object id -> {fill, edge} canvases of its coloured mask
  opacity: 0.55, latencies: [],
};
let queue = Promise.resolve();

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

function setStatus(text, kind = "ready") {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

// Run fn after every earlier queued request; errors are shown, never thrown further.
// body[data-pending] counts the requests not yet answered and drawn, body[data-requests] all
// requests so far (tests wait on them).
function enqueue(fn) {
  const pending = (delta) => { document.body.dataset.pending = Number(document.body.dataset.pending || 0) + delta; };
  document.body.dataset.requests = Number(document.body.dataset.requests || 0) + 1;
  pending(1);
  queue = queue.then(fn).catch((err) => setStatus(err.message, "error")).finally(() => pending(-1));
  return queue;
}

// Every request carries the app's token (the server refuses requests without it: no other site's
// page or form can act for the user).
async function fetchApi(path, body) {
  const headers = state.token ? { [TOKEN_HEADER]: state.token } : {};
  const init = body === undefined ? { headers } : {
    method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  if (!response.ok) {
    const data = await response.json().catch(() => ({ error: `HTTP ${response.status} from ${path}` }));
    throw new ApiError(data.error || `HTTP ${response.status}`, response.status);
  }
  return response;
}

async function request(path, body) {
  return (await fetchApi(path, body)).json();
}

// The configuration and the token. On this machine the server hands its page a token; a server
// started with --token needs it from the address printed at start (?token=, then kept for the
// tab) or asks for it.
async function loadConfig() {
  const url = new URL(window.location.href);
  if (url.searchParams.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, url.searchParams.get("token"));
    url.searchParams.delete("token");
    history.replaceState(null, "", url);   // keep the token out of the address bar and history
  }
  state.token = sessionStorage.getItem(TOKEN_KEY);
  for (;;) {
    try {
      const response = await fetchApi("/api/config");
      if (response.headers.get(TOKEN_HEADER)) state.token = response.headers.get(TOKEN_HEADER);
      return response.json();
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 403 || !/token/i.test(err.message)) throw err;
      const token = window.prompt("This annotation server needs its token (the address printed when it started carries it):");
      if (!token) throw err;
      state.token = token.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
    }
  }
}

async function newSession() {
  state.session = (await request("/api/session", {})).session;
  sessionStorage.setItem("skipclick-session", state.session);
}

// A POST of this tab on the open image. After a server restart the token (drawn anew) is
// fetched again and the forgotten session renewed, once each, and the image reopened.
async function act(action, fields = {}) {
  const body = () => ({ session: state.session, image: state.image && state.image.name, ...fields });
  const failed = (err, status, pattern) => err instanceof ApiError && err.status === status && pattern.test(err.message);
  let tokenRenewed = false;
  for (;;) {
    try {
      return await request(`/api/${action}`, body());
    } catch (err) {
      if (!tokenRenewed && failed(err, 403, /X-SkipClick-Token/)) {
        tokenRenewed = true;
        await loadConfig();
        continue;
      }
      if (!failed(err, 404, /unknown session/)) throw err;
      await newSession();
      if (action !== "open" && state.image) await request("/api/open", body());
      return request(`/api/${action}`, body());
    }
  }
}

// COCO compressed RLE (pycocotools' string format) -> run lengths.
function rleCounts(text) {
  const runs = [];
  let p = 0;
  while (p < text.length) {
    let value = 0, shift = 0, more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      value |= (c & 0x1f) << shift;
      more = (c & 0x20) !== 0;
      shift += 5;
      p += 1;
      if (!more && (c & 0x10)) value |= -1 << shift;
    }
    if (runs.length > 2) value += runs[runs.length - 2];
    runs.push(value);
  }
  return runs;
}

function colorOf(id) {
  return PALETTE[(id - 1) % PALETTE.length];
}

// Two canvases of the working-image size: the mask filled in the object's colour, and its outline
// (drawn opaque, so an object stays visible at any opacity). Runs are column-major.
function maskLayers(rle, color) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(w * h);   // row-major
  let position = 0;
  rleCounts(rle.counts).forEach((run, i) => {
    if (i % 2 === 1) for (let k = position; k < position + run; k++) mask[(k % h) * w + Math.floor(k / h)] = 1;
    position += run;
  });
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  const rgba = new Uint32Array(new Uint8ClampedArray([r, g, b, 255]).buffer)[0];   // in the platform's byte order
  const fill = new ImageData(w, h), edge = new ImageData(w, h);
  const fillPixels = new Uint32Array(fill.data.buffer), edgePixels = new Uint32Array(edge.data.buffer);
  for (let y = 0; y < h; y++) {
    for (let x = 0, i = y * w; x < w; x++, i++) {
      if (!mask[i]) continue;
      fillPixels[i] = rgba;
      if (x === 0 || x === w - 1 || y === 0 || y === h - 1 || !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w]) {
        edgePixels[i] = rgba;
      }
    }
  }
  const layers = {};
  for (const [kind, pixels] of [["fill", fill], ["edge", edge]]) {
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").putImageData(pixels, 0, 0);
    layers[kind] = canvas;
  }
  return layers;
}

// Apply a server answer: objects, masks that came with it, unsaved images.
function apply(data) {
  state.objects = data.objects;
  state.current = data.current;
  state.unsaved = data.unsaved;
  const ids = new Set(data.objects.map((o) => o.id));
  for (const id of state.masks.keys()) if (!ids.has(id)) state.masks.delete(id);
  for (const obj of data.objects) {
    if (obj.mask) state.masks.set(obj.id, maskLayers(obj.mask, colorOf(obj.id)));
  }
  if (data.image) {
    state.image = data.image;
    const entry = state.config.images[data.image.index];
    entry.saved = data.image.saved;
  }
  render();
  renderObjects();
  renderImages();
}

function render() {
  const overlay = $("overlay");
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  if (!state.image) return;
  for (const obj of state.objects) {
    const layers = state.masks.get(obj.id);
    if (!layers) continue;
    const isCurrent = obj.id === state.current;
    ctx.globalAlpha = isCurrent ? state.opacity : state.opacity * 0.6;
    ctx.drawImage(layers.fill, 0, 0);
    ctx.globalAlpha = isCurrent ? 1 : 0.7;
    ctx.drawImage(layers.edge, 0, 0);
  }
  ctx.globalAlpha = 1;
  const current = state.objects.find((o) => o.id === state.current);
  if (!current) return;
  const sx = state.image.work_width / state.image.width;
  const sy = state.image.work_height / state.image.height;
  const radius = Math.max(4, Math.round(Math.max(overlay.width, overlay.height) / 140));
  for (const click of current.clicks) {
    ctx.beginPath();
    ctx.arc((click.x + 0.5) * sx, (click.y + 0.5) * sy, radius, 0, 2 * Math.PI);
    ctx.fillStyle = click.positive ? POSITIVE : NEGATIVE;
    ctx.fill();
    ctx.lineWidth = Math.max(1, radius / 4);
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
}

function renderObjects() {
  const list = $("object-list");
  list.replaceChildren();
  const area = state.image ? state.image.work_width * state.image.work_height : 1;
  for (const obj of state.objects) {
    const item = document.createElement("li");
    item.dataset.id = obj.id;
    item.dataset.area = obj.area;
    item.dataset.clicks = obj.clicks.length;
    if (obj.id === state.current) item.classList.add("current");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colorOf(obj.id);
    const select = document.createElement("select");
    for (const name of new Set([...state.config.categories, obj.category])) select.add(new Option(name, name));
    select.value = obj.category;
    select.addEventListener("click", (e) => e.stopPropagation());
    select.addEventListener("change", () => enqueue(async () => apply(await act("category", { object: obj.id, category: select.value }))));
    const info = document.createElement("span");
    info.className = "info";
    const clicks = `${obj.clicks.length} click${obj.clicks.length === 1 ? "" : "s"}`;
    info.textContent = obj.area ? `${(100 * obj.area / area).toFixed(1)} %, ${clicks}` : "empty: click the image";
    const remove = document.createElement("button");
    remove.className = "delete";
    remove.title = "delete object";
    remove.textContent = "\u00d7";
    remove.addEventListener("click", (e) => { e.stopPropagation(); deleteObject(obj.id); });
    item.append(swatch, select, info, remove);
    item.addEventListener("click", () => enqueue(async () => apply(await act("select", { object: obj.id }))));
    list.append(item);
  }
}

function renderImages() {
  const unsaved = new Set(state.unsaved);
  $("image-list").querySelectorAll("li").forEach((item, i) => {
    const entry = state.config.images[i];
    item.dataset.saved = entry.saved;
    item.dataset.unsaved = unsaved.has(entry.name);
    item.classList.toggle("active", state.image !== null && state.image.index === i);
  });
}

// Scale both canvases (CSS size only) to fit the stage, aspect kept.
function fit() {
  if (!state.image) return;
  const stage = $("stage");
  const scale = Math.min((stage.clientWidth - 20) / state.image.work_width,
                         (stage.clientHeight - 40) / state.image.work_height);
  for (const canvas of [$("image-canvas"), $("overlay")]) {
    canvas.style.width = `${Math.floor(state.image.work_width * scale)}px`;
    canvas.style.height = `${Math.floor(state.image.work_height * scale)}px`;
  }
}

// The working image, fetched with the token (an <img src> could not send it).
async function loadImage(name) {
  const blob = await (await fetchApi(`/api/image?name=${encodeURIComponent(name)}`)).blob();
  return createImageBitmap(blob).catch(() => { throw new Error(`cannot load image ${name}`); });
}

// discard: drop this tab's unsaved changes of the image and load the stored annotation.
function openImage(index, discard = false) {
  const images = state.config.images;
  if (index < 0 || index >= images.length) return;
  const name = images[index].name;
  enqueue(async () => {
    setStatus(`opening ${name}: computing image features…`, "busy");
    const data = await act("open", { image: name, discard });
    const img = await loadImage(name);
    state.masks.clear();
    for (const canvas of [$("image-canvas"), $("overlay")]) {
      canvas.width = data.image.work_width;
      canvas.height = data.image.work_height;
    }
    $("image-canvas").getContext("2d").drawImage(img, 0, 0);
    state.image = data.image;
    fit();
    apply(data);
    const { width, height, work_width: ww } = data.image;
    $("image-title").textContent = `${name} (${index + 1} / ${images.length}), ${width}\u00d7${height} px` +
      (ww < width ? `, shown and segmented at ${ww} px wide, saved at full size` : "");
    setStatus(`ready: features in ${Math.round(data.encode_ms)} ms`);
  });
}

function showLatency(ms, data) {
  state.latencies.push(ms);
  if (state.latencies.length > LATENCY_WINDOW) state.latencies.shift();
  const sorted = [...state.latencies].sort((a, b) => a - b);
  const median = sorted[Math.floor((sorted.length - 1) / 2)];
  const element = $("latency");
  element.dataset.ms = ms.toFixed(1);
  element.dataset.modelMs = data.model_ms;
  element.dataset.serverMs = data.server_ms;
  element.dataset.count = Number(element.dataset.count) + 1;
  element.textContent = `click \u2192 mask: ${Math.round(ms)} ms (model ${Math.round(data.model_ms)} ms; ` +
    `median of last ${sorted.length}: ${Math.round(median)} ms)`;
}

function onPointer(event) {
  if (!state.image || (event.button !== 0 && event.button !== 2)) return;
  event.preventDefault();
  const start = performance.now();
  const rect = $("overlay").getBoundingClientRect();
  const clamp = (v, n) => Math.min(Math.max(Math.floor(v), 0), n - 1);
  const x = clamp((event.clientX - rect.left) / rect.width * state.image.width, state.image.width);
  const y = clamp((event.clientY - rect.top) / rect.height * state.image.height, state.image.height);
  const positive = event.button === 0;
  enqueue(async () => {
    setStatus("segmenting…", "busy");
    const data = await act("click", { x, y, positive });
    apply(data);
    await new Promise((resolve) => requestAnimationFrame(resolve));
    showLatency(performance.now() - start, data);
    setStatus("ready");
  });
}

function simple(action, done) {
  enqueue(async () => {
    const data = await act(action);
    apply(data);
    setStatus(data.message || done);
  });
}

function deleteObject(id) {
  enqueue(async () => apply(await act("delete", { object: id })));
}

// Saving sends the version of the annotation the page was given: when someone else saved the
// image since, the server refuses (409) and the page says so; the user may overwrite theirs.
function save() {
  enqueue(async () => {
    setStatus("saving…", "busy");
    let data;
    try {
      data = await act("save", { version: state.image.version });
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 409) throw err;
      setStatus(err.message, "error");
      if (window.confirm(`${err.message}\n\nOverwrite their annotation of this image with yours?`)) {
        data = await act("save", { force: true });
      } else {
        if (window.confirm("Load their annotation instead? Your changes to this image are discarded.")) {
          openImage(state.image.index, true);
        }
        return;
      }
    }
    apply(data);
    const objects = data.written.length - 1;
    setStatus(`saved ${objects} object${objects === 1 ? "" : "s"} to ${state.config.out}`);
  });
}

function setOpacity(value) {
  state.opacity = Math.min(Math.max(value, 0), 1);
  $("opacity").value = Math.round(state.opacity * 100);
  render();
}

function onKey(event) {
  if (event.target.closest("input, select, textarea")) return;
  const key = event.key;
  const index = state.image ? state.image.index : 0;
  if ((event.ctrlKey || event.metaKey) && key === "z") simple("undo", "undone");
  else if ((event.ctrlKey || event.metaKey) && key === "s") save();
  else if (event.ctrlKey || event.metaKey || event.altKey) return;
  else if (key === "u") simple("undo", "undone");
  else if (key === "r") simple("reset", "object reset");
  else if (key === "s") save();
  else if (key === "n") openImage(index + 1);
  else if (key === "p") openImage(index - 1);
  else if (key === "Enter") simple("finish", "new object: click it");
  else if (key === "Delete") { if (state.current !== null) deleteObject(state.current); }
  else if (key === "+" || key === "=") setOpacity(state.opacity + 0.1);
  else if (key === "-") setOpacity(state.opacity - 0.1);
  else return;
  event.preventDefault();
}

async function start() {
  state.config = await loadConfig();
  $("backend").textContent = state.config.backend;
  if (state.config.notice) {
    $("notice").textContent = state.config.notice;
    $("notice").hidden = false;
  }
  $("image-count").textContent = `(${state.config.images.length})`;
  state.config.images.forEach((entry, i) => {
    const item = document.createElement("li");
    item.textContent = entry.name;
    item.title = entry.name;
    item.addEventListener("click", () => openImage(i));
    $("image-list").append(item);
  });
  if (state.config.skipped.length) {
    const skipped = $("skipped");
    skipped.hidden = false;
    const count = state.config.skipped.length;
    skipped.querySelector("summary").textContent = `${count} file${count === 1 ? "" : "s"} skipped`;
    for (const { name, reason } of state.config.skipped) {
      const item = document.createElement("li");
      item.textContent = `${name}: ${reason}`;
      skipped.querySelector("ul").append(item);
    }
  }
  state.session = sessionStorage.getItem("skipclick-session");
  if (!state.session) await newSession();
  const overlay = $("overlay");
  overlay.addEventListener("mousedown", onPointer);
  overlay.addEventListener("contextmenu", (e) => e.preventDefault());
  document.addEventListener("keydown", onKey);
  window.addEventListener("resize", fit);
  window.addEventListener("beforeunload", (e) => { if (state.unsaved.length) e.preventDefault(); });
  $("opacity").addEventListener("input", (e) => setOpacity(e.target.value / 100));
  $("btn-finish").addEventListener("click", () => simple("finish", "new object: click it"));
  $("btn-undo").addEventListener("click", () => simple("undo", "undone"));
  $("btn-reset").addEventListener("click", () => simple("reset", "object reset"));
  $("btn-save").addEventListener("click", save);
  $("btn-prev").addEventListener("click", () => openImage((state.image ? state.image.index : 0) - 1));
  $("btn-next").addEventListener("click", () => openImage((state.image ? state.image.index : 0) + 1));
  setOpacity(Number($("opacity").value) / 100);
  openImage(0);
}

start().catch((err) => setStatus(err.message, "error"));
