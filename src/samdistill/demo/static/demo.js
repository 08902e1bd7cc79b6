// samdistill demo page: open an image (or a NIfTI volume), draw a box / click points, see every model's mask.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, image: null, bitmap: null, mode: "box", box: null, points: [], labels: [],
                drag: null, volume: null, busy: false };
window.lastResult = null;

function say(text, isError = false) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
}

async function api(method, url, body) {
  const opts = { method };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers = { "Content-Type": "application/json" }; }
  let res;
  try { res = await fetch(url, opts); } catch (e) { throw new Error("the demo server cannot be reached: " + e.message); }
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((data && data.error) || `${res.status} ${res.statusText}`);
  return data;
}

// ------------------------------------------------------------------ drawing
function draw() {
  const c = $("canvas");
  if (!state.bitmap) return;
  const ctx = c.getContext("2d");
  ctx.drawImage(state.bitmap, 0, 0, c.width, c.height);
  const lw = Math.max(2, Math.round(Math.max(c.width, c.height) / 300));
  const b = state.drag || state.box;
  if (b) {
    ctx.lineWidth = lw;
    ctx.strokeStyle = "#ffd400";
    ctx.setLineDash([lw * 3, lw * 2]);
    ctx.strokeRect(Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.abs(b[2] - b[0]), Math.abs(b[3] - b[1]));
    ctx.setLineDash([]);
  }
  state.points.forEach((p, i) => {
    ctx.beginPath();
    ctx.arc(p[0], p[1], lw * 3, 0, 2 * Math.PI);
    ctx.fillStyle = state.labels[i] ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.lineWidth = lw / 2;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  });
}

function toImage(ev) {
  const c = $("canvas");
  const r = c.getBoundingClientRect();
  const x = (ev.clientX - r.left) * c.width / r.width;
  const y = (ev.clientY - r.top) * c.height / r.height;
  return [Math.min(Math.max(x, 0), c.width - 1), Math.min(Math.max(y, 0), c.height - 1)];
}

async function showImage(info, src) {
  const img = new Image();
  await new Promise((ok, bad) => { img.onload = ok; img.onerror = () => bad(new Error("the image could not be shown")); img.src = src; });
  state.image = info;
  state.bitmap = img;
  const c = $("canvas");
  c.width = info.width;
  c.height = info.height;
  c.style.display = "block";
  $("stage-hint").style.display = "none";
  draw();
}

function resetPrompt() {
  state.box = null; state.points = []; state.labels = []; state.drag = null;
  draw();
}

// ------------------------------------------------------------------ segment and show
function fmt(v, digits = 1) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

function render(result) {
  window.lastResult = result;
  const box = $("results");
  box.innerHTML = "";
  const stem = result.image.name.replace(/\.[^.]+$/, "").replace(/[^\w.-]+/g, "_");
  for (const m of result.models) {
    const card = document.createElement("div");
    card.className = "card result";
    card.dataset.model = m.name;
    card.dataset.area = m.area_px;
    const enc = m.encoder_cached ? `${fmt(m.encoder_ms)} ms (cached from the first request)` : `${fmt(m.encoder_ms)} ms`;
    // what a user waits for: the next click (a new box on this image: decoder + postprocess, this request's
    // time) and, on an image's first request, the first click (read + encoder + decoder + postprocess)
    const first = m.first_click_ms === null || m.first_click_ms === undefined ? ""
      : `<dt>first click</dt><dd class="first-click">${fmt(m.first_click_ms)} ms (read + encoder + decoder)</dd>`;
    const clicks = first + (m.prompt_free
      ? `<dt>decoder</dt><dd>${fmt(m.decoder_ms)} ms (postprocess only: prompt-free)</dd>`
      : `<dt>next click</dt><dd class="next-click">${fmt(m.next_click_ms)} ms (decoder + postprocess: a new box on this image)</dd>`);
    const safe = m.name.replace(/[^\w.-]+/g, "_");
    card.innerHTML = `
      <h3><span class="dot" style="background:${m.colour}"></span><span class="name"></span>
          <span class="muted">${m.backend}${m.prompt_free ? ", prompt-free" : ""}</span></h3>
      <img class="overlay" alt="">
      <dl>
        <dt>encoder</dt><dd>${enc}</dd>
        ${clicks}
        <dt>mask area</dt><dd class="area">${m.area_px} px</dd>
        <dt>predicted IoU</dt><dd>${fmt(m.iou_pred, 3)}</dd>
        ${m.dice_gt === null ? "" : `<dt>Dice vs ground truth</dt><dd>${fmt(m.dice_gt, 4)}</dd>`}
      </dl>
      <a class="mask-link" download="${stem}_${safe}_mask.png">mask PNG</a>
      <a class="overlay-link" download="${stem}_${safe}_overlay.png">overlay PNG</a>`;
    card.querySelector(".name").textContent = m.name;
    card.querySelector("img.overlay").src = m.overlay_png;
    card.querySelector("img.overlay").alt = `${m.name} mask over the image`;
    card.querySelector(".mask-link").href = m.mask_png;
    card.querySelector(".overlay-link").href = m.overlay_png;
    box.appendChild(card);
  }
  if (result.gt_png) {
    const card = document.createElement("div");
    card.className = "card";
    card.innerHTML = `<h3>ground truth</h3><img alt="ground-truth mask">`;
    card.querySelector("img").src = result.gt_png;
    box.appendChild(card);
  }
  const agree = $("agreement");
  agree.innerHTML = "";
  if (result.dice_between.length) {
    const t = document.createElement("table");
    t.innerHTML = "<tr><th>models</th><th>Dice between their masks</th></tr>" + result.dice_between
      .map((d) => `<tr><td></td><td>${fmt(d.dice, 4)}</td></tr>`).join("");
    result.dice_between.forEach((d, i) => { t.rows[i + 1].cells[0].textContent = `${d.a} vs ${d.b}`; });
    agree.appendChild(t);
  }
  const summary = { image: result.image, prompt: result.prompt, dice_between: result.dice_between,
    models: result.models.map(({ mask_png, overlay_png, ...rest }) => rest) };
  const link = $("json-link");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([JSON.stringify(summary, null, 2)], { type: "application/json" }));
  link.style.display = "inline";
}

async function segment() {
  if (!state.image) { say("open an image first", true); return; }
  const body = { image_id: state.image.image_id };
  if (state.box) body.box = state.box.map((v) => Math.round(v * 10) / 10);
  if (state.points.length) { body.points = state.points.map((p) => p.map((v) => Math.round(v * 10) / 10)); body.labels = state.labels; }
  say("segmenting...");
  state.busy = true;
  document.body.dataset.busy = "1";
  try {
    const result = await api("POST", "/api/segment", body);
    render(result);
    say(`${result.models.length} model(s) on ${result.image.name}` + (result.image.has_gt ? " (ground truth known)" : ""));
  } catch (e) {
    say(e.message, true);
  } finally {
    state.busy = false;
    delete document.body.dataset.busy;
  }
}

// ------------------------------------------------------------------ canvas interaction
$("canvas").addEventListener("mousedown", (ev) => {
  if (!state.image || ev.button !== 0) return;
  ev.preventDefault();
  const p = toImage(ev);
  if (state.mode === "box") { state.drag = [p[0], p[1], p[0], p[1]]; draw(); return; }
  state.points.push(p);
  state.labels.push(state.mode === "pos" ? 1 : 0);
  draw();
  segment();
});
window.addEventListener("mousemove", (ev) => {
  if (!state.drag) return;
  const p = toImage(ev);
  state.drag[2] = p[0]; state.drag[3] = p[1];
  draw();
});
window.addEventListener("mouseup", () => {
  if (!state.drag) return;
  const d = state.drag;
  state.drag = null;
  state.box = [Math.min(d[0], d[2]), Math.min(d[1], d[3]), Math.max(d[0], d[2]), Math.max(d[1], d[3])];
  draw();
  segment();
});
for (const id of ["mode-box", "mode-pos", "mode-neg"]) {
  $(id).addEventListener("click", () => {
    state.mode = $(id).dataset.mode;
    for (const other of ["mode-box", "mode-pos", "mode-neg"]) $(other).classList.toggle("on", other === id);
  });
}
$("clear").addEventListener("click", () => { resetPrompt(); say("prompts cleared"); });

// ------------------------------------------------------------------ opening images and volumes
function clearResults() {
  $("results").innerHTML = '<span class="muted">results appear here</span>';
  $("agreement").innerHTML = "";
  $("json-link").style.display = "none";
  window.lastResult = null;
}

async function openImageInfo(info) {
  resetPrompt();
  clearResults();
  await showImage(info, `/api/image/${info.image_id}.png`);
  const promptFree = state.info.models.every((m) => m.prompt_free);
  say(`${info.name}: ${info.width}x${info.height}` + (promptFree ? "" : " — drag a box around the object"));
  if (promptFree) segment();
}

$("file").addEventListener("change", async () => {
  const f = $("file").files[0];
  if (!f) return;
  const form = new FormData();
  form.append("file", f, f.name);
  const isVolume = /\.nii(\.gz)?$/i.test(f.name);
  say(`uploading ${f.name}...`);
  try {
    if (isVolume) {
      const v = await api("POST", "/api/volume", form);
      state.volume = v;
      $("volume").style.display = "block";
      $("slice").max = v.slices - 1;
      $("slice").value = Math.floor(v.slices / 2);
      $("nifti-link").style.display = "none";
      await loadSlice(Number($("slice").value));
    } else {
      state.volume = null;
      $("volume").style.display = "none";
      await openImageInfo(await api("POST", "/api/image", form));
    }
  } catch (e) {
    say(e.message, true);
  }
});

$("dataset-load").addEventListener("click", async () => {
  try {
    state.volume = null;
    $("volume").style.display = "none";
    await openImageInfo(await api("POST", `/api/dataset/${$("dataset-select").value}`));
  } catch (e) { say(e.message, true); }
});

// ------------------------------------------------------------------ volumes
async function loadSlice(z) {
  const v = state.volume;
  const info = await api("POST", `/api/volume/${v.volume_id}/slice/${z}`);
  $("slice-label").textContent = `${z} / ${v.slices - 1}`;
  const keepBox = state.box;
  await showImage(info, info.mask_overlay_png || `/api/image/${info.image_id}.png`);
  state.box = keepBox;
  state.points = []; state.labels = [];
  draw();
  say(`${v.name}: slice ${z} of ${v.slices} (${v.width}x${v.height}) — draw a box, then propagate`);
}

$("slice").addEventListener("input", () => { if (state.volume) loadSlice(Number($("slice").value)).catch((e) => say(e.message, true)); });

$("propagate").addEventListener("click", async () => {
  const v = state.volume;
  if (!v) return;
  try {
    const z = Number($("slice").value);
    let job = await api("POST", `/api/volume/${v.volume_id}/propagate`, { model: $("prop-model").value, box: state.box, slice: z });
    while (job.state === "running") {
      $("prop-progress").max = job.total || 1;
      $("prop-progress").value = job.done;
      $("prop-text").textContent = `${job.done} slice(s) segmented`;
      await new Promise((ok) => setTimeout(ok, 300));
      job = await api("GET", `/api/volume/${v.volume_id}/status`);
    }
    if (job.state === "error") throw new Error(job.message);
    $("prop-progress").value = $("prop-progress").max;
    $("prop-text").textContent = job.message;
    const link = $("nifti-link");
    link.href = `/api/volume/${v.volume_id}/mask.nii.gz?t=${Date.now()}`;
    link.download = v.name.replace(/\.nii(\.gz)?$/i, "") + "_mask.nii.gz";
    link.style.display = "inline";
    await loadSlice(z);
  } catch (e) { say(e.message, true); }
});

// ------------------------------------------------------------------ start
(async () => {
  try {
    state.info = await api("GET", "/api/info");
  } catch (e) { say(e.message, true); return; }
  const names = state.info.models.map((m) => m.name + (m.prompt_free ? " (prompt-free)" : ""));
  $("model-list").textContent = "models: " + names.join(" · ");
  const lim = state.info.limits;
  $("limits").textContent = `PNG, JPG, TIFF or BMP (grey, RGB, 16-bit) up to ${lim.upload_mb} MB and ${lim.image_mp} MP; ` +
    `NIfTI volumes (.nii, .nii.gz) up to ${lim.volume_mb} MB.`;
  for (const m of state.info.models.filter((m) => !m.prompt_free)) {
    const o = document.createElement("option");
    o.value = o.textContent = m.name;
    $("prop-model").appendChild(o);
  }
  if ($("prop-model").options.length > 1) $("prop-model").selectedIndex = 1;  // a student: the fast one
  const ds = state.info.dataset;
  if (ds && ds.items.length) {
    $("dataset-row").style.display = "flex";
    $("dataset-name").textContent = ds.name;
    ds.items.forEach((id, i) => {
      const o = document.createElement("option");
      o.value = i; o.textContent = id;
      $("dataset-select").appendChild(o);
    });
  }
  document.body.dataset.ready = "1";
})();
