// Analysis from the page: POST /api/slides/{id}/analyze, then poll GET .../job every 500 ms,
// showing tiles done / total, tiles/s and the ETA in a progress bar, until done or error.
"use strict";

function formatJob(job) {
  if (job.state === "queued") return `waiting (position ${job.queue_position || "?"} in the queue)…`;
  if (job.state === "running") {
    if (job.tiles_total == null) return "finding tissue…";
    const rate = job.tiles_per_s ? ` · ${job.tiles_per_s} tiles/s` : "";
    const eta = job.eta_s != null ? ` · about ${Math.ceil(job.eta_s)} s left` : "";
    return `${job.tiles_done} / ${job.tiles_total} tiles${rate}${eta}`;
  }
  if (job.state === "error") return `analysis failed: ${job.error}`;
  if (job.state === "done") return job.cached ? "done (from the cache)" : `done in ${job.seconds} s`;
  return "";
}

// Start (or join) the analysis of slideId; updates `progress` (a <progress>) and `text`, calls
// onDone(job) when it has finished (done) or onError(message).
async function breastpathAnalyse(slideId, { progress, text, onDone, onError }) {
  const url = `/api/slides/${encodeURIComponent(slideId)}`;
  const show = (job) => {
    text.textContent = formatJob(job);
    if (job.tiles_total) { progress.max = job.tiles_total; progress.value = job.tiles_done; }
    else if (job.state === "done") { progress.max = 1; progress.value = 1; }
    else progress.removeAttribute("value");
  };
  progress.hidden = false;
  let response = await fetch(`${url}/analyze`, { method: "POST" });
  let job = await response.json().catch(() => ({}));
  if (!response.ok) {
    progress.hidden = true;
    const message = job.detail || `HTTP ${response.status}`;
    text.textContent = message;
    if (onError) onError(message);
    return;
  }
  while (job.state === "queued" || job.state === "running") {
    show(job);
    await new Promise((resolve) => setTimeout(resolve, 500));
    response = await fetch(`${url}/job`);
    if (!response.ok) { text.textContent = `HTTP ${response.status}`; return; }
    job = await response.json();
  }
  show(job);
  if (job.state === "done") { if (onDone) onDone(job); }
  else if (onError) onError(job.error || job.state);
}

window.breastpathAnalyse = breastpathAnalyse;
