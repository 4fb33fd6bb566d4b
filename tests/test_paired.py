"""Paired patient-bootstrap difference of two cross-validations."""

from __future__ import annotations

import numpy as np
import pytest

from breastpath.errors import ConfigError
from breastpath.experiments.paired import paired_delta, read_oof


def _oof(scores: np.ndarray, labels: np.ndarray, patients: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "row": np.arange(len(scores)),
        "label": labels,
        "patient": patients,
        "raw": scores,
        "centred": scores,
    }


def test_paired_delta_of_a_recipe_with_itself_is_zero_and_better_is_positive():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    patients = np.repeat(np.arange(40).astype(str), 10)
    noisy = np.clip(labels * 0.3 + rng.random(400) * 0.7, 0, 1)
    sharp = np.clip(labels * 0.6 + rng.random(400) * 0.4, 0, 1)
    a = _oof(noisy, labels, patients)
    same = paired_delta(a, a, n_boot=50)
    assert all(r["delta"] == 0.0 and r["ci95"] == (0.0, 0.0) for r in same.values())
    better = paired_delta(a, _oof(sharp, labels, patients), n_boot=200)
    for r in better.values():
        assert r["delta"] > 0 and 0 < r["ci95"][0] <= r["delta"] <= r["ci95"][1]


def test_paired_delta_refuses_other_images_and_metrics():
    labels = np.array([0, 1, 0, 1])
    a = _oof(np.array([0.1, 0.9, 0.2, 0.8]), labels, np.array(["p", "p", "q", "q"]))
    b = {**a, "row": np.array([0, 1, 2, 5])}
    with pytest.raises(ConfigError, match="same images"):
        paired_delta(a, b)
    with pytest.raises(ConfigError, match="unknown metric"):
        paired_delta(a, a, metrics=["kappa"])


def test_read_oof_centres_each_row_on_its_fold_threshold(tmp_path):
    path = tmp_path / "oof_predictions.csv"
    path.write_text(
        "row,path,patient,label,fold,threshold,p_non-IDC,p_IDC\n"
        "1,b.png,p,1,0,0.8,0.2,0.8\n"
        "0,a.png,p,0,1,0.4,0.6,0.4\n",
        encoding="utf-8",
    )
    oof = read_oof(path)
    assert oof["row"].tolist() == [0, 1] and oof["label"].tolist() == [0, 1]
    assert oof["centred"].tolist() == [0.5, 0.5]
    fixed = read_oof(path, threshold=0.5)  # one threshold for all, as `--threshold 0.5` decides
    assert fixed["centred"].tolist() == [0.4, 0.8]


def test_paired_metrics_agree_with_binary_metrics():
    from breastpath.evaluate.metrics import binary_metrics
    from breastpath.experiments.paired import _metrics

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    raw = np.clip(y * 0.4 + rng.random(300) * 0.6, 0, 1)
    centred = np.clip(raw + 0.05, 0, 1)
    ours = _metrics(y, raw, centred)
    reference = binary_metrics(y, centred, threshold=0.5)
    assert ours["f1"] == pytest.approx(reference["f1"])
    assert ours["balanced_accuracy"] == pytest.approx(reference["balanced_accuracy"])
    assert ours["roc_auc"] == pytest.approx(binary_metrics(y, raw)["roc_auc"])
    assert ours["accuracy"] == pytest.approx(reference["accuracy"])
