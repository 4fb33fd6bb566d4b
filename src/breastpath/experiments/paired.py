"""Paired comparison of two cross-validations over the same patients: the difference of a
metric with a patient-bootstrap 95% interval.

Two recipes cross-validated on the same folds score every image once each. Resampling whole
patients (the same draw for both recipes) gives the interval of the *difference*, which is much
narrower than the two recipes' own intervals side by side: most of their spread comes from which
patients are hard, and that is shared. Thresholded metrics use each image's own fold threshold
(:func:`~breastpath.experiments.crossval_metrics.centre_scores`, decisions at 0.5); ROC-AUC uses
the raw probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.errors import ConfigError
from breastpath.experiments.crossval_metrics import centre_scores
from breastpath.io import read_csv

__all__ = ["paired_delta", "read_oof"]

METRICS = ("f1", "balanced_accuracy", "roc_auc", "accuracy")


def read_oof(
    path: str | Path, *, positive: str = "IDC", threshold: float | None = None
) -> dict[str, np.ndarray]:
    """Rows of an ``oof_predictions.csv`` (binary): ``row``, ``label``, ``patient``, ``fold``,
    every class probability ``probs`` (columns in the file's class order), the raw positive
    probability ``raw`` and the ``centred`` score (its fold threshold at 0.5; with
    ``threshold``, that one fixed threshold for every row, as a cross-validation run with
    ``--threshold 0.5`` decides)."""
    rows = sorted(read_csv(Path(path)), key=lambda r: int(r["row"]))
    raw = np.array([float(r[f"p_{positive}"]) for r in rows])
    if threshold is None:
        thresholds = np.array([float(r["threshold"]) for r in rows])
    else:
        thresholds = np.full(len(rows), float(threshold))
    columns = [key for key in (rows[0] if rows else {}) if key.startswith("p_")]
    return {
        "row": np.array([int(r["row"]) for r in rows]),
        "label": np.array([int(r["label"]) for r in rows]),
        "patient": np.array([r["patient"] for r in rows]),
        "fold": np.array([int(r["fold"]) for r in rows]),
        "probs": np.array([[float(r[key]) for key in columns] for r in rows]),
        "raw": raw,
        "centred": centre_scores(raw, thresholds),
    }


def _metrics(y: np.ndarray, raw: np.ndarray, centred: np.ndarray) -> dict[str, float]:
    """F1, balanced accuracy and accuracy at the fold thresholds, ROC-AUC of the raw
    probabilities (as
    :func:`~breastpath.evaluate.metrics.binary_metrics` computes them, without its extras)."""
    from sklearn.metrics import roc_auc_score

    predicted = centred >= 0.5
    tp = float(np.sum(predicted & (y == 1)))
    fp = float(np.sum(predicted & (y == 0)))
    fn = float(np.sum(~predicted & (y == 1)))
    tn = float(np.sum(~predicted & (y == 0)))
    sensitivity = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    return {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "roc_auc": float(roc_auc_score(y, raw)),
        "accuracy": (tp + tn) / len(y),
    }


def paired_delta(
    a: dict[str, np.ndarray],
    b: dict[str, np.ndarray],
    *,
    metrics: Sequence[str] = METRICS,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``metric(b) - metric(a)`` over the same images, with a paired patient-bootstrap 95% CI.

    ``a`` and ``b`` come from :func:`read_oof` of two cross-validations of the same data.

    Returns
    -------
    dict
        ``metric -> {"a", "b", "delta", "ci95": (low, high)}``.
    """
    if not np.array_equal(a["row"], b["row"]) or not np.array_equal(a["label"], b["label"]):
        raise ConfigError("the two cross-validations did not score the same images")
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; use {', '.join(METRICS)}")
    y = a["label"]
    point_a = _metrics(y, a["raw"], a["centred"])
    point_b = _metrics(y, b["raw"], b["centred"])
    ids, inverse = np.unique(a["patient"], return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(len(ids))]
    rng = np.random.default_rng(seed)
    deltas: dict[str, list[float]] = {m: [] for m in metrics}
    for _ in range(n_boot):
        take = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        if len(np.unique(y[take])) < 2:
            continue
        ma = _metrics(y[take], a["raw"][take], a["centred"][take])
        mb = _metrics(y[take], b["raw"][take], b["centred"][take])
        for m in metrics:
            deltas[m].append(mb[m] - ma[m])
    return {
        m: {
            "a": point_a[m],
            "b": point_b[m],
            "delta": point_b[m] - point_a[m],
            "ci95": tuple(float(v) for v in np.quantile(deltas[m], [0.025, 0.975])),
        }
        for m in metrics
    }
