"""evaluate_checkpoint end to end: metrics at both levels, predictions, plots and report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from breastpath.data.cache import open_prepared
from breastpath.errors import CheckpointError
from breastpath.evaluate.metrics import binary_metrics
from breastpath.evaluate.pipeline import evaluate_checkpoint
from breastpath.inference.predictor import Predictor

METRIC_KEYS = {
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "pr_auc",
    "confusion_matrix",
}


def test_evaluate_writes_metrics_predictions_plots_and_report(trained_run, prepared_idc, tmp_path):
    result = evaluate_checkpoint(trained_run, prepared_idc, tmp_path, split="test")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["patch"]) >= METRIC_KEYS
    assert {"sensitivity", "specificity", "extent_mae", "extent_icc"} <= set(metrics["patient"])
    rule = Predictor.from_checkpoint(trained_run).verdict_rule(unit="patch")
    assert rule.describe() in metrics["patient_score"]
    assert metrics["patient_verdict"]["rule"] == rule.describe()
    data = open_prepared(prepared_idc)
    test_rows = data.indices("test")
    assert metrics["patch"]["n"] == len(test_rows)
    assert metrics["patient"]["n"] == len(set(data.patients[test_rows]))
    # patients.csv: each patient's verdict is the rule's over its own patch probabilities
    with open(tmp_path / "patients.csv", newline="") as handle:
        patients = {r["patient"]: r for r in csv.DictReader(handle)}
    with open(tmp_path / "predictions.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    assert set(patients) == set(data.patients[test_rows])
    for patient, row in patients.items():
        mine = [r for r in predictions if r["patient"] == patient]
        verdict = rule.apply([float(r["probability"]) for r in mine])
        assert row["positive"] == str(verdict.positive)
        assert float(row["extent"]) == pytest.approx(verdict.extent, abs=1e-6)
        true = np.mean([int(r["label"]) for r in mine])
        assert float(row["true_extent"]) == pytest.approx(true, abs=1e-6)

    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(test_rows)
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["probability"]) for r in rows])
    threshold = json.loads((trained_run / "best.json").read_text())["threshold"]
    again = binary_metrics(labels, scores, threshold=threshold)
    assert again["confusion_matrix"] == metrics["patch"]["confusion_matrix"]
    assert result["patch"]["f1"] == pytest.approx(again["f1"], abs=1e-6)

    for name in (
        "roc.png",
        "pr.png",
        "reliability.png",
        "confusion_matrix.png",
        "predictions.png",
        "training_curves.png",
        "report.html",
        "report.md",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64" in html and "balanced" in html.lower()
    assert "Reliability diagram" in html and "<figcaption>roc</figcaption>" not in html


def test_evaluate_raw_source_scores_every_image(trained_run, idc_tree, tmp_path):
    result = evaluate_checkpoint(trained_run, idc_tree, tmp_path)
    assert result["patch"]["n"] == len(list(idc_tree.rglob("*.png")))
    assert result["run_info"]["split"] == "all"


def test_evaluate_refuses_mismatched_classes(trained_run, tmp_path):
    from conftest import save_png, synthetic_patch

    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        save_png(tmp_path / "src" / cls / "x.png", synthetic_patch(rng, 0))
    with pytest.raises(CheckpointError, match="classes"):
        evaluate_checkpoint(trained_run, tmp_path / "src", tmp_path / "out")


def test_evaluate_leaves_what_is_not_tissue_out_and_says_so(trained_run, idc_tree, tmp_path):
    import shutil

    from conftest import save_png

    source = tmp_path / "src"
    shutil.copytree(idc_tree, source)
    patient = next(p for p in sorted(source.iterdir()) if p.is_dir())
    glass = np.full((50, 50, 3), (241, 235, 238), np.uint8)
    for i in range(3):  # blank glass labelled as IDC: a model must not be credited for it
        save_png(patient / "1" / f"{patient.name}_idx5_x{9001 + 50 * i}_y1_class1.png", glass)
    total = len(list(source.rglob("*.png")))
    result = evaluate_checkpoint(trained_run, source, tmp_path / "out")
    assert result["quality"]["images"] == total
    assert result["quality"]["not_assessed"] == 3
    assert result["quality"]["reasons"] == {"blank glass / background": 3}
    assert result["patch"]["n"] == total - 3
    with open(tmp_path / "out" / "not_assessed.csv", newline="") as handle:
        flagged = list(csv.DictReader(handle))
    assert sorted(Path(r["path"]).name for r in flagged) == sorted(
        p.name for p in patient.glob("1/*x9*_y1_class1.png")
    )
    forced = evaluate_checkpoint(trained_run, source, tmp_path / "forced", allow_non_tissue=True)
    assert forced["patch"]["n"] == total and "research only" in forced["quality"]["rule"]
