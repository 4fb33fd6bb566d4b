// breastpath web app: upload, predict, explain. Talks only to this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, limits: null, rows: [], files: [], request: 0, controller: null, timer: null };
// Why a tile was not assessed (the API's tiles.skipped), in the tile map's legend.
const SKIPPED = {
  background: "background (glass, lumen, fat)", dark: "too dark", not_he: "not H&E colours",
  no_texture: "no tissue texture", mask: "outside the tissue mask",
};

function pct(p) { return `${(100 * p).toFixed(1)}%`; }
function png(b64) { return `data:image/png;base64,${b64}`; }
function isZip(file) { return /\.zip$/i.test(file.name) || file.type === "application/zip"; }

function setStatus(text) { $("status").textContent = text || ""; }

// Every upload (and every row clicked) starts a new request: the one before is aborted, and an
// answer that still arrives for it is dropped, so a late answer never covers a newer one.
function begin() {
  state.request += 1;
  if (state.controller) state.controller.abort();
  state.controller = new AbortController();
  stopProgress();
  return { id: state.request, signal: state.controller.signal };
}
function current(token) { return token.id === state.request; }

// What is being computed and for how long, until the answer (or a newer request) comes.
function startProgress(token, text) {
  stopProgress();
  const started = performance.now();
  const show = () => {
    if (current(token)) setStatus(`${text} ${((performance.now() - started) / 1000).toFixed(1)} s`);
  };
  show();
  $("progress").hidden = false;
  state.timer = setInterval(show, 100);
}
function stopProgress() {
  if (state.timer !== null) clearInterval(state.timer);
  state.timer = null;
  $("progress").hidden = true;
  setStatus("");
}
function clearMessages() { $("messages").replaceChildren(); }
function addMessage(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("messages").appendChild(li);
}

async function loadModel() {
  try {
    const response = await fetch("/api/models");
    const data = await response.json();
    state.model = data.models[0];
    state.limits = data.limits;
    const m = state.model;
    $("model").textContent =
      `${m.name} ${m.version || ""} · ${m.classes.join(" / ")} · input ${m.input_size.join("x")}` +
      ` · threshold ${m.threshold.toFixed(3)}`;
    const l = state.limits;
    $("limits").textContent =
      `PNG, JPEG, TIFF or BMP; up to ${l.max_files} files, ${(l.max_upload_bytes / 2 ** 20).toFixed(0)} MB` +
      ` and ${(l.max_pixels / 1e6).toFixed(0)} Mpixels each; a batch (zips expanded) up to ` +
      `${(l.max_batch_bytes / 2 ** 20).toFixed(0)} MB and ` +
      `${(l.max_request_pixels / 1e6).toFixed(0)} Mpixels in all. Larger images are tiled at ` +
      `${m.input_size.join("x")} pixels (at most ${l.max_tiles} tiles an image, ` +
      `${l.max_request_tiles} a batch).`;
  } catch (err) {
    $("model").textContent = "model information unavailable";
  }
}

async function postForm(url, form, signal) {
  let response;
  try {
    response = await fetch(url, { method: "POST", body: form, signal });
  } catch (err) {
    return { ok: false, detail: `network error: ${err}` };
  }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    const detail = data && data.detail;
    const text = typeof detail === "string" ? detail : JSON.stringify(detail || response.statusText);
    return { ok: false, detail: `${text} (HTTP ${response.status})` };
  }
  return { ok: true, data };
}

function notAssessed(r) {
  const reason = (r.quality && r.quality.reason) || "did not pass the input-quality check";
  return `not assessed: ${reason}`;
}

function showVerdict(r) {
  const cancer = r.is_cancer;
  if (r.label === null) {  // the quality gate flagged the image: no cancer label
    $("label").textContent = notAssessed(r);
    $("label").className = "unassessed";
  } else {
    const forced = r.forced ? " (forced: not H&E tissue by the quality check; research only)" : "";
    $("label").textContent = `${r.label}: ${pct(r.probability)} probability of cancer${forced}`;
    $("label").className = cancer ? "cancer" : "benign";
  }
  $("fill").style.width = pct(r.probability);
  $("fill").className = cancer ? "cancer" : "";
  $("mark").style.left = pct(r.threshold);
  $("mark").title = `decision threshold ${r.threshold.toFixed(3)}`;
  const how = { none: "", padded: " · padded to the input size", resized: " · resized to the input size" };
  $("detail").textContent =
    `${r.filename} · ${r.image.width}x${r.image.height}${how[r.preprocessing] || ""}` +
    ` · threshold ${r.threshold.toFixed(3)} · model ${r.model.name} ${r.model.version || ""}` +
    ` · ${(1000 * r.seconds).toFixed(0)} ms`;
  const t = r.tiles;
  if (t && r.label === null) {
    $("tile-detail").textContent =
      `Tiles: ${t.count}, none scored: the image as a whole is not assessed.`;
  } else {
    $("tile-detail").textContent = t
      ? `Tiles: ${t.count} (${t.assessed_count} assessed). ${t.verdict.text}.`
      : (r.note || "");
  }
}

function tileLegend(r) {
  const t = r.tiles;
  const head = `Tile map: ${t.rows}x${t.cols} tiles; `;
  if (r.label === null) return `${head}grey = not assessed: all ${t.count} (the image is not assessed)`;
  const counts = {};
  for (const reason of t.skipped.flat()) if (reason) counts[reason] = (counts[reason] || 0) + 1;
  const reasons = Object.entries(counts).map(([k, n]) => `${n} ${SKIPPED[k] || k}`).join(", ");
  const grey = t.count - t.assessed_count;
  return `${head}coloured = assessed (${t.assessed_count}), by probability of cancer; ` +
    `grey = not assessed (${grey}${reasons ? `: ${reasons}` : ""})`;
}

function showExplanation(r) {
  const e = r.explain;
  $("preview").src = png(e.input_png);
  $("overlay").src = png(e.gradcam_png);
  $("overlay-caption").textContent = `Grad-CAM for "${e.target_class}" on ${e.explains}` +
    (e.evidence ? "" : ` (${e.note})`);
  const s = e.stain;
  $("stain").hidden = !s.available;
  $("stain-none").hidden = s.available;
  if (s.available) {
    $("stain").src = png(s.png);
    $("stain-caption").textContent = `Stain-normalized (${s.method})`;
  } else {
    $("stain").removeAttribute("src");
    $("stain-none").textContent = `No stain-normalized view: ${s.note}`;
    $("stain-caption").textContent = "Stain-normalized";
  }
  $("stain-figure").title = s.note;
  $("tiles-figure").hidden = !e.tiles_png;
  if (e.tiles_png) {
    $("tiles").src = png(e.tiles_png);
    $("tiles-caption").textContent = tileLegend(r);
  }
}

async function predictOne(file, token) {
  startProgress(token, `${file.name}: scoring it and computing its explanation (Grad-CAM: where ` +
    "the model found evidence, tile by tile for a large image; tile map; stain-normalized view)…");
  const form = new FormData();
  form.append("file", file);
  const result = await postForm("/api/predict?explain=true", form, token.signal);
  if (!current(token)) return false;  // a newer upload or click: this answer is dropped
  stopProgress();
  if (!result.ok) {
    addMessage(`${file.name}: ${result.detail}`);
    return false;
  }
  showVerdict(result.data);
  showExplanation(result.data);
  $("single").hidden = false;
  return true;
}

function miniBar(p, cancer) {
  const outer = document.createElement("span");
  outer.className = "mini";
  const inner = document.createElement("span");
  inner.style.width = pct(p);
  if (cancer) inner.className = "cancer";
  outer.appendChild(inner);
  return outer;
}

function tileScore(t) {
  if (!t) return "—";
  if (t.score === null) return `— (none of ${t.count} tiles assessed)`;
  return `${pct(t.score)} (${t.assessed_count} of ${t.count} tiles assessed)`;
}

function renderTable(results) {
  const body = $("results").querySelector("tbody");
  body.replaceChildren();
  for (const r of results) {
    const tr = document.createElement("tr");
    const cells = [String(r.index + 1), r.filename];
    if (r.ok && r.label === null) {
      tr.className = "unassessed";
      cells.push(notAssessed(r), "—", "—", "not assessed");
    } else if (r.ok) {
      tr.className = r.is_cancer ? "positive" : "negative";
      cells.push(r.label, null, tileScore(r.tiles), "ok");
    } else {
      tr.className = "failed";
      cells.push("—", "—", "—", `rejected (HTTP ${r.error.status}): ${r.error.detail}`);
    }
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      if (i === 3 && r.ok && r.label !== null) {
        td.appendChild(miniBar(r.probability, r.is_cancer));
        td.appendChild(document.createTextNode(pct(r.probability)));
      } else {
        td.textContent = text;
      }
      tr.appendChild(td);
    });
    const file = state.files.find((f) => f.name === r.filename && !isZip(f));
    if (r.ok && file) {
      tr.addEventListener("click", () => { clearMessages(); predictOne(file, begin()); });
    }
    body.appendChild(tr);
  }
}

async function predictBatch(files, token) {
  startProgress(token, `Scoring ${files.length} file(s) (zips expanded, large images tile by tile)…`);
  const form = new FormData();
  for (const file of files) form.append("files", file);
  const result = await postForm("/api/predict/batch", form, token.signal);
  if (!current(token)) return;  // a newer upload: this answer is dropped
  stopProgress();
  if (!result.ok) {
    addMessage(result.detail);
    return;
  }
  const data = result.data;
  state.rows = data.results;
  const s = data.summary;
  $("batch-summary").textContent =
    `${s.ok} scored, ${s.failed} rejected, ${s.cancer} above the threshold · ` +
    `${(1000 * data.seconds).toFixed(0)} ms`;
  renderTable(data.results);
  $("batch").hidden = false;
  for (const r of data.results) if (!r.ok) addMessage(r.error.detail);
  const first = data.results.find((r) => r.ok);
  const firstFile = first && state.files.find((f) => f.name === first.filename && !isZip(f));
  if (firstFile) await predictOne(firstFile, token);
}

function csvCell(value) {
  let text = value === null || value === undefined ? "" : String(value);
  // a cell a spreadsheet would run as a formula gets a leading apostrophe
  if (/^[=+\-@\t\r]/.test(text) && Number.isNaN(Number(text))) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function downloadCsv() {
  const header = ["index", "filename", "ok", "label", "probability", "is_cancer", "threshold",
    "tile_verdict", "tile_extent", "tile_score", "tile_max", "tiles", "tiles_assessed", "width", "height", "assessed",
    "tissue_fraction", "has_tissue_pixels", "he_colours", "reason", "error"];
  const lines = [header.join(",")];
  for (const r of state.rows) {
    const t = r.tiles || {};
    const q = r.quality || {};
    lines.push([
      r.index + 1, r.filename, r.ok, r.label, r.probability, r.is_cancer, r.threshold,
      t.label, t.extent, t.score, t.max, t.count, t.assessed_count, r.image && r.image.width,
      r.image && r.image.height, r.assessed, q.tissue_fraction, q.has_tissue_pixels, q.he_colours,
      q.reason,
      r.error && r.error.detail,
    ].map(csvCell).join(","));
  }
  const blob = new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "breastpath-results.csv";
  document.body.appendChild(link);
  link.click();
  link.remove();
}

async function handle(fileList) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  const token = begin();
  clearMessages();
  state.files = files;
  $("single").hidden = true;
  $("batch").hidden = true;
  const limit = state.limits ? state.limits.max_files : Infinity;
  if (files.length > limit) {
    addMessage(`${files.length} files: more than the limit of ${limit} per batch`);
    return;
  }
  if (files.length === 1 && !isZip(files[0])) await predictOne(files[0], token);
  else await predictBatch(files, token);
}

const drop = $("drop");
const input = $("file");
input.addEventListener("change", () => { handle(input.files); input.value = ""; });
drop.addEventListener("click", (e) => { if (e.target === drop) input.click(); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  handle(e.dataTransfer.files);
});
$("csv").addEventListener("click", downloadCsv);
loadModel();
