"""evaluate_checkpoint end to end: metrics at both levels, predictions, plots and report."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from breastpath.data.cache import open_prepared
from breastpath.errors import CheckpointError
from breastpath.evaluate.metrics import binary_metrics
from breastpath.evaluate.pipeline import evaluate_checkpoint

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
    assert set(metrics["patch"]) >= METRIC_KEYS and set(metrics["patient"]) >= METRIC_KEYS
    assert "mean of" in metrics["patient_score"]
    data = open_prepared(prepared_idc)
    test_rows = data.indices("test")
    assert metrics["patch"]["n"] == len(test_rows)
    assert metrics["patient"]["n"] == len(set(data.patients[test_rows]))

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
        "confusion_matrix.png",
        "predictions.png",
        "training_curves.png",
        "report.html",
        "report.md",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64" in html and "balanced" in html.lower()


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
