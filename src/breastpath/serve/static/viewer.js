// The slide viewer: OpenSeadragon over the server's Deep Zoom tiles, with the model's tile map
// drawn on a canvas from the tile records (only the tiles in view), toggled without reloading.
"use strict";

const slideId = decodeURIComponent(location.pathname.split("/").pop());
const api = `/api/slides/${encodeURIComponent(slideId)}`;
const $ = (id) => document.getElementById(id);
const SKIP_COLORS = {
  background: "#4fa3d9", mask: "#b0b0b0", dark: "#333333", not_he: "#2ca02c",
  no_texture: "#9467bd",
};
const state = { tiles: [], byCell: new Map(), step: 1, threshold: 0, verdictThreshold: null,
                showProb: true, showSkipped: false, opacity: 0.5, drawn: 0, selected: null };

// the "jet" colour scale of heatmap.png (matplotlib's), as the legend shows it
function jet(p) {
  const clamp = (v) => Math.max(0, Math.min(1, v));
  const r = clamp(1.5 - Math.abs(4 * p - 3));
  const g = clamp(1.5 - Math.abs(4 * p - 2));
  const b = clamp(1.5 - Math.abs(4 * p - 1));
  return `rgb(${Math.round(255 * r)},${Math.round(255 * g)},${Math.round(255 * b)})`;
}

const viewer = OpenSeadragon({
  element: $("viewer"),
  prefixUrl: "/static/vendor/openseadragon/images/",
  tileSources: `${api}.dzi`,
  showNavigator: true,
  drawer: "canvas",
  maxZoomPixelRatio: 2,
  gestureSettingsMouse: { clickToZoom: false },
  crossOriginPolicy: false,
});

const canvas = document.createElement("canvas");
canvas.className = "overlay-canvas";
canvas.id = "overlay-canvas";
viewer.canvas.appendChild(canvas);

function draw() {
  const ratio = window.devicePixelRatio || 1;
  const width = viewer.canvas.clientWidth, height = viewer.canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  let drawn = 0;
  if (viewer.world.getItemCount() && state.tiles.length && (state.showProb || state.showSkipped)) {
    const origin = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const unit = viewer.viewport.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
    const scale = (unit.x - origin.x) / 1000;
    ctx.globalAlpha = state.opacity;
    for (const t of state.tiles) {
      const x = origin.x + t.x * scale, y = origin.y + t.y * scale, s = t.size * scale;
      if (x + s < 0 || y + s < 0 || x > width || y > height) continue;
      if (t.probability != null) {
        if (!state.showProb || t.probability < state.threshold) continue;
        ctx.fillStyle = jet(t.probability);
      } else {
        if (!state.showSkipped) continue;
        ctx.fillStyle = SKIP_COLORS[t.skipped] || "#888888";
      }
      ctx.fillRect(x, y, Math.max(s, 1), Math.max(s, 1));
      drawn += 1;
    }
    if (state.selected) {
      const t = state.selected;
      ctx.globalAlpha = 1;
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.strokeRect(origin.x + t.x * scale, origin.y + t.y * scale, t.size * scale, t.size * scale);
    }
  }
  state.drawn = drawn;
  $("drawn").textContent = String(drawn);
  canvas.dataset.drawn = String(drawn);
}

for (const event of ["animation", "update-viewport", "resize", "open"]) viewer.addHandler(event, draw);

function tileAt(position) {
  if (!viewer.world.getItemCount()) return null;
  const p = viewer.viewport.viewerElementToImageCoordinates(position);
  const row = Math.floor(p.y / state.step), col = Math.floor(p.x / state.step);
  for (const [dr, dc] of [[0, 0], [0, -1], [-1, 0], [-1, -1], [0, 1], [1, 0], [1, 1]]) {
    const t = state.byCell.get(`${row + dr},${col + dc}`);
    if (t && p.x >= t.x && p.x < t.x + t.size && p.y >= t.y && p.y < t.y + t.size) return t;
  }
  return null;
}

function describeTile(t) {
  if (!t) return "No tile here.";
  const where = `x ${t.x}, y ${t.y} (level-0 px), ${t.size} px wide`;
  if (t.probability == null) return `skipped: ${t.skipped} · ${where}`;
  const called = state.verdictThreshold != null && t.probability >= state.verdictThreshold;
  return `probability ${t.probability.toFixed(3)}${called ? " (called)" : ""} · ${where}`;
}

new OpenSeadragon.MouseTracker({
  element: viewer.element,
  moveHandler: (event) => { $("tile-info").textContent = describeTile(tileAt(event.position)); },
});
viewer.addHandler("canvas-click", (event) => {
  if (!event.quick) return;
  state.selected = tileAt(event.position);
  $("tile-info").textContent = describeTile(state.selected);
  draw();
});

function flyTo(bbox) {
  const [x0, y0, x1, y1] = bbox;
  const margin = Math.max(x1 - x0, y1 - y0) * 0.5;
  const rect = viewer.viewport.imageToViewportRectangle(
    x0 - margin, y0 - margin, x1 - x0 + 2 * margin, y1 - y0 + 2 * margin);
  viewer.viewport.fitBounds(rect);
}

function showVerdict(body) {
  const v = body.verdict || {};
  const label = $("verdict");
  label.textContent = v.label || "not analysed";
  label.className = "verdict-label " +
    (v.positive === true ? "positive" : v.positive === false ? "negative" : "unassessed");
  $("verdict-text").textContent = v.text || "";
  $("rule").textContent = v.rule && !(v.text || "").includes(v.rule) ? `Rule: ${v.rule}` : "";
  $("notes").textContent = (body.notes || []).join(" ");
}

function showRegions(regions) {
  const list = $("regions");
  list.replaceChildren();
  if (!regions.length) {
    list.append(Object.assign(document.createElement("li"),
      { textContent: "No tile at or above the verdict threshold." }));
  }
  for (const r of regions) {
    const item = document.createElement("li");
    item.textContent = `${r.tiles} called tile${r.tiles === 1 ? "" : "s"}, max ${r.max.toFixed(2)}, mean ${r.mean.toFixed(2)}`;
    item.dataset.bbox = JSON.stringify(r.bbox);
    item.tabIndex = 0;
    item.addEventListener("click", () => flyTo(r.bbox));
    item.addEventListener("keydown", (e) => { if (e.key === "Enter") flyTo(r.bbox); });
    list.append(item);
  }
  $("regions-box").hidden = false;
}

function wireControls() {
  $("show-prob").addEventListener("change", (e) => { state.showProb = e.target.checked; draw(); });
  $("show-skipped").addEventListener("change", (e) => { state.showSkipped = e.target.checked; draw(); });
  $("opacity").addEventListener("input", (e) => { state.opacity = e.target.value / 100; draw(); });
  $("threshold").addEventListener("input", (e) => {
    state.threshold = e.target.value / 100;
    $("threshold-value").textContent = state.threshold.toFixed(2);
    draw();
  });
}

function offerAnalysis(slide) {
  const analysis = (slide && slide.analysis) || {};
  if (!analysis.available) {
    $("verdict-text").textContent = "This slide has not been analysed (run breastpath slide on it" +
      (analysis.reason ? `; ${analysis.reason}` : "") + ").";
    return;
  }
  $("verdict-text").textContent = "This slide has not been analysed.";
  $("analyse-box").hidden = false;
  $("analyse").addEventListener("click", async () => {
    $("analyse").disabled = true;
    await breastpathAnalyse(slideId, {
      progress: $("job-progress"), text: $("job-text"),
      onDone: async () => { $("analyse").hidden = true; await loadAnalysis(slide, true); },
      onError: () => { $("analyse").disabled = false; },
    });
  });
}

let wired = false;

async function loadAnalysis(slide, fresh) {
  // a slide listed as not analysed has no tile records: offer the analysis, fetch nothing
  if (slide && !slide.analysed && !fresh) {
    offerAnalysis(slide);
    return;
  }
  const response = await fetch(`${api}/tiles`);
  if (!response.ok) {
    offerAnalysis(slide);
    return;
  }
  const body = await response.json();
  const index = Object.fromEntries(body.columns.map((name, i) => [name, i]));
  state.byCell.clear();
  state.tiles = body.tiles.map((row) => Object.fromEntries(Object.entries(index).map(([k, i]) => [k, row[i]])));
  for (const t of state.tiles) state.byCell.set(`${t.row},${t.col}`, t);
  state.step = (body.tiling && body.tiling.step_level0) || (state.tiles[0] ? state.tiles[0].size : 1);
  state.verdictThreshold = body.verdict ? body.verdict.threshold : null;
  showVerdict(body);
  showRegions(body.regions || []);
  $("csv-link").href = `${api}/tiles.csv`;
  $("geojson-link").href = `${api}/tiles.geojson`;
  $("overlay-controls").hidden = false;
  $("downloads").hidden = false;
  if (!wired) wireControls();
  wired = true;
  draw();
}

async function main() {
  const response = await fetch(api);
  let s = null;
  if (response.ok) {
    s = await response.json();
    $("slide-name").textContent = `${s.name} · ${s.format || ""} · ${s.width || "?"} × ${s.height || "?"} px`;
    document.title = `breastpath: ${s.name}`;
  }
  await loadAnalysis(s);
}

window.breastpathViewer = { viewer, state, draw, flyTo };
main();
