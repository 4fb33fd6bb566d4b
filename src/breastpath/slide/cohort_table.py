"""The cohort table: one row per slide (``cohort.csv``) and its metrics (``cohort.json``).

A row's ``status`` is ``scored``, ``skipped: <reason>`` (the slide was read but nothing in it
could be scored: no tissue tile passed the tile checks), ``error: <reason>`` (it could not be
used: corrupt, unreadable, no scale, a DICOM folder with two series, too many tiles, ...) or
``pending`` (not run yet, or stopped in flight). The verdict columns come from the slide
result's verdict (the one verdict rule, :mod:`breastpath.inference.verdict`).

With labels in the manifest, :func:`cohort_metrics` scores the verdicts per slide and per
patient with :func:`breastpath.evaluate.metrics.binary_metrics`: decisions (sensitivity,
specificity, ...) from the verdict's ``positive``, ranking (ROC and PR AUC) from its ``score``.
A patient is positive when any of its slides is, its score is its slides' highest and its
label the highest of its slides' labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from breastpath.io import write_csv, write_json

if TYPE_CHECKING:
    from breastpath.slide.analyze import SlideResult
    from breastpath.slide.sources import SlideSource

COHORT_FIELDS = [
    "slide", "path", "patient", "label", "status", "backend", "mpp", "level", "tile_mpp",
    "tiles_read", "tiles_scored", "tiles_skipped", "positive", "verdict", "score", "extent",
    "tiles_assessed", "tiles_called", "rule", "open_s", "tissue_s", "scoring_s", "total_s",
    "tiles_per_s", "output",
]  # fmt: skip
#: The columns that say what a slide was found to be (the same under any world size).
VERDICT_FIELDS = ["slide", "status", "positive", "verdict", "score", "extent", "tiles_called"]
#: Fewer negative (or positive) slides or patients than this get a note beside the metrics.
FEW = 10


def base_row(source: SlideSource) -> dict[str, Any]:
    """The columns a slide has before it is run."""
    return {
        "slide": source.name,
        "path": source.display,
        "patient": source.patient,
        "label": source.label,
        "status": "pending",
        "output": source.name,
    }


def verdict_columns(result: SlideResult) -> dict[str, Any]:
    """The verdict columns of a slide result: the one verdict rule's (``result.verdict``)."""
    verdict = result.verdict.to_dict()
    return {
        "positive": verdict["positive"],
        "verdict": verdict["label"],
        "score": _round(verdict["score"]),
        "extent": _round(verdict["extent"]),
        "tiles_assessed": verdict["tiles_assessed"],
        "tiles_called": verdict["tiles_called"],
        "rule": verdict["rule"],
    }


def result_row(source: SlideSource, result: SlideResult) -> dict[str, Any]:
    """The row of a slide :func:`~breastpath.slide.analyze.analyze_slide` ran to the end."""
    info = result.info
    slide, tiling, timing = info.get("slide", {}), info.get("tiling", {}), info.get("timing", {})
    skipped = tiling.get("tiles_skipped") or {}
    row = {
        **base_row(source),
        "status": "scored",
        "backend": slide.get("backend"),
        "mpp": slide.get("mpp"),
        "level": tiling.get("level"),
        "tile_mpp": _round(tiling.get("mpp")),
        "tiles_read": tiling.get("tiles_read"),
        "tiles_scored": tiling.get("tiles_scored"),
        "tiles_skipped": sum(int(n) for n in skipped.values()),
        "tissue_s": timing.get("tissue_and_grid_s"),
        "scoring_s": timing.get("scoring_s"),
        "tiles_per_s": timing.get("tiles_per_s"),
        **verdict_columns(result),
    }
    if result.verdict.positive is None:
        reasons = ", ".join(f"{n} {r}" for r, n in skipped.items() if n) or "none"
        row["status"] = f"skipped: no tissue tile passed the tile checks ({reasons})"
    return row


def write_table(out_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``cohort.csv`` (atomically) and return its path."""
    path = Path(out_dir) / "cohort.csv"
    write_csv(path, [_csv_values(r) for r in rows], COHORT_FIELDS)
    return path


def _csv_values(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("" if v is None else int(v) if isinstance(v, bool) else v) for k, v in row.items()}


def status_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many slides are scored, skipped, in error, pending."""
    counts = {"scored": 0, "skipped": 0, "error": 0, "pending": 0}
    for row in rows:
        kind = str(row.get("status", "pending")).split(":")[0]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def cohort_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Slide- and patient-level metrics of the scored slides that have a label (empty when
    none has). See the module docstring for the patient rule."""
    labelled = [r for r in rows if r.get("status") == "scored" and r.get("label") is not None]
    labelled = [r for r in labelled if r.get("positive") is not None]
    if not labelled:
        return {}
    out: dict[str, Any] = {"slide": _level_metrics(labelled, "slides")}
    patients: dict[str, list[Mapping[str, Any]]] = {}
    for row in labelled:
        if row.get("patient"):
            patients.setdefault(str(row["patient"]), []).append(row)
    if patients:
        merged = [
            {
                "label": max(int(r["label"]) for r in group),
                "positive": any(bool(r["positive"]) for r in group),
                "score": max(
                    (r["score"] for r in group if r.get("score") is not None), default=None
                ),
            }
            for group in patients.values()
        ]
        out["patient"] = _level_metrics(merged, "patients")
        out["patient"]["rule"] = (
            "a patient is positive when any of its slides is; its score is its slides' highest"
        )
    return out


def _level_metrics(rows: Sequence[Mapping[str, Any]], unit: str) -> dict[str, Any]:
    from breastpath.evaluate.metrics import binary_metrics

    labels = [int(r["label"]) for r in rows]
    decisions = binary_metrics(labels, [float(bool(r["positive"])) for r in rows], threshold=0.5)
    for ranking in ("roc_auc", "pr_auc"):
        decisions.pop(ranking, None)
    decisions.pop("threshold", None)
    out: dict[str, Any] = {"decision": decisions}
    scores = [r.get("score") for r in rows]
    if all(s is not None and 0.0 <= float(s) <= 1.0 for s in scores):
        ranked = binary_metrics(labels, [float(s) for s in scores])  # type: ignore[arg-type]
        out["ranking"] = {"roc_auc": ranked["roc_auc"], "pr_auc": ranked["pr_auc"]}
    notes = []
    for kind, n in (("negative", decisions["n_negative"]), ("positive", decisions["n_positive"])):
        if n < FEW:
            notes.append(f"only {n} {kind} {unit}: the figures that depend on them are unreliable")
    out["notes"] = notes
    return out


def write_summary(
    out_dir: str | Path, rows: Sequence[Mapping[str, Any]], *, settings: Mapping[str, Any]
) -> Path:
    """Write ``cohort.json``: status counts, the settings, the rule and the metrics."""
    rules = sorted({str(r["rule"]) for r in rows if r.get("rule")})
    body = {
        "slides": len(rows),
        "status": status_counts(rows),
        "rule": rules[0] if len(rules) == 1 else rules,
        "settings": dict(settings),
        "metrics": cohort_metrics(rows),
    }
    path = Path(out_dir) / "cohort.json"
    write_json(path, body)
    return path


def _round(value: Any, digits: int = 6) -> Any:
    return round(float(value), digits) if isinstance(value, (int, float)) else value
