// The slide list (breastpath serve --slides DIR): one card per slide, linked to its viewer.
"use strict";

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
}

function sizeText(s) {
  if (!s.width) return "";
  const mpp = s.mpp ? ` · ${s.mpp.toFixed(3)} µm/px` : " · no µm/px";
  return `${s.format} · ${s.width.toLocaleString()} × ${s.height.toLocaleString()} px${mpp}`;
}

function verdictNode(s) {
  if (!s.verdict) return el("p", { className: "muted small", textContent: s.status });
  const v = s.verdict;
  const cls = v.positive === true ? "positive" : v.positive === false ? "negative" : "unassessed";
  const extent = v.extent == null ? "" : ` · extent ${(100 * v.extent).toFixed(1)}%`;
  return el("p", {},
    el("span", { className: `verdict-label ${cls}`, textContent: v.label }),
    el("span", { className: "muted small", textContent: extent }));
}

function analyseControls(s, item) {
  const button = el("button", { type: "button", className: "analyse", textContent: "Analyse" });
  const progress = el("progress", { className: "job-progress", hidden: true });
  const text = el("p", { className: "muted small job-text", role: "status" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    await breastpathAnalyse(s.id, {
      progress, text,
      onDone: async () => {
        const response = await fetch(`/api/slides/${encodeURIComponent(s.id)}`);
        if (response.ok) item.replaceWith(card(await response.json()));
      },
      onError: () => { button.disabled = false; },
    });
  });
  item.append(button, progress, text);
}

let analysis = { available: false };

function card(s) {
  const link = `/slides/${encodeURIComponent(s.id)}`;
  const item = el("li", { className: s.error ? "card error" : "card" });
  item.dataset.id = s.id;
  if (!s.error) {
    const img = el("img", { alt: `thumbnail of ${s.name}`, loading: "lazy" });
    img.src = `/api/slides/${encodeURIComponent(s.id)}/thumbnail.jpeg`;
    item.append(el("a", { href: link }, img));
  }
  item.append(el("h2", {}, s.error ? s.name : el("a", { href: link, textContent: s.name })));
  item.append(el("p", { className: "muted small", textContent: sizeText(s) }));
  if (s.error) item.append(el("p", { className: "small", textContent: `cannot be opened: ${s.error}` }));
  item.append(verdictNode(s));
  if (s.verdict && s.status !== "scored") {
    item.append(el("p", { className: "muted small", textContent: s.status }));
  }
  for (const note of (s.notes || []).slice(0, 2)) {
    item.append(el("p", { className: "muted small", textContent: `note: ${note}` }));
  }
  if (!s.error && !s.verdict && analysis.available) analyseControls(s, item);
  return item;
}

async function main() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/slides");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    const list = document.getElementById("slides");
    analysis = body.analysis || analysis;
    for (const s of body.slides) list.append(card(s));
    status.textContent = `${body.slides.length} slide(s)` + (body.cohort ? " (a cohort output)" : "") +
      (analysis.available ? "" : ` · ${analysis.reason || "analysis from the page is off"}`);
  } catch (error) {
    status.textContent = `could not list the slides: ${error.message}`;
  }
}

main();
