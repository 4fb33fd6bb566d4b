"""Choose a verdict rule's free parameters inside patient-level cross-validation folds.

The IDC verdict rule (:class:`~breastpath.inference.verdict.VerdictRule`, ``presence``) has
three numbers a model does not fix by itself: the tile threshold at which a patch is *called*
IDC for the verdict and the extent, the least number of called patches ``min_tiles`` and the
least share ``min_extent``. They are chosen here from out-of-fold (OOF) predictions of
``breastpath crossval`` by **cross-fitting**: the numbers applied to fold ``k``'s patients are
chosen on the OOF predictions of the *other* folds' patients only, so no patient's own labels
pick the rule that judges it. The figures pooled over the folds are the estimate; the rule
chosen on all patients is the one to ship.

Objectives (on the choosing patients):

- tile threshold: the least mean absolute error between each patient's called share and its
  true share (patches labelled IDC), over :data:`THRESHOLDS`;
- ``min_tiles`` and ``min_extent``: the highest patient balanced accuracy of presence (ties:
  the higher sensitivity, then the smaller numbers), over :data:`MIN_TILES` x
  :data:`MIN_EXTENTS`; with no negative patient among the choosers they stay at the smallest.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> patients = np.repeat([f"p{i}" for i in range(10)], 20)
>>> labels = (rng.random(200) < np.repeat(np.linspace(0, 0.6, 10), 20)).astype(int)
>>> probs = np.clip(labels * 0.5 + rng.random(200) * 0.5, 0, 1)
>>> folds = np.repeat(np.arange(10) % 2, 20)
>>> out = cross_fit_rule(patients, labels, probs, folds, base=VerdictRule(
...     reduction="presence", threshold=0.5), n_boot=0)
>>> sorted(out["pooled"]["extent"])
['bias', 'icc', 'mae', 'pearson_r']
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from breastpath.evaluate.patients import extent_agreement, patient_verdict_metrics
from breastpath.inference.verdict import VerdictRule

__all__ = ["MIN_EXTENTS", "MIN_TILES", "THRESHOLDS", "choose_rule", "cross_fit_rule"]

#: Candidate tile thresholds for the verdict and the extent.
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.05, 0.96, 0.01))
#: Candidate least numbers of called patches.
MIN_TILES = (1, 2, 3, 5)
#: Candidate least shares of called patches.
MIN_EXTENTS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2)


def _called_shares(
    inverse: np.ndarray, n: int, probs: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    called = np.bincount(inverse, weights=(probs >= threshold).astype(float), minlength=n)
    counts = np.bincount(inverse, minlength=n)
    return called, called / np.maximum(counts, 1)


def choose_rule(
    patients: np.ndarray, labels: np.ndarray, probs: np.ndarray, *, base: VerdictRule
) -> VerdictRule:
    """The rule with the threshold, ``min_tiles`` and ``min_extent`` these patients favour
    (see the module docstring); only ``presence`` rules have numbers to choose."""
    if base.reduction != "presence":
        return base
    ids, inverse = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    n = len(ids)
    counts = np.bincount(inverse, minlength=n)
    true_share = np.bincount(inverse, weights=labels, minlength=n) / np.maximum(counts, 1)
    truth = true_share > 0
    errors = [
        np.abs(_called_shares(inverse, n, probs, t)[1] - true_share).mean() for t in THRESHOLDS
    ]
    threshold = THRESHOLDS[int(np.argmin(errors))]
    called, share = _called_shares(inverse, n, probs, threshold)
    best: tuple[float, float, float, float] | None = None
    choice = (MIN_TILES[0], MIN_EXTENTS[0])
    for k in MIN_TILES:
        for f in MIN_EXTENTS:
            positive = (called >= k) & (share >= f)
            sens = positive[truth].mean() if truth.any() else 0.0
            spec = (~positive[~truth]).mean() if (~truth).any() else 0.0
            key = ((sens + spec) / 2, sens, -k, -f)
            if best is None or key > best:
                best, choice = key, (k, f)
    if not (~truth).any():
        choice = (MIN_TILES[0], MIN_EXTENTS[0])
    return replace(base, threshold=threshold, min_tiles=choice[0], min_extent=choice[1])


def cross_fit_rule(
    patients: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    folds: np.ndarray,
    *,
    base: VerdictRule,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per fold, the rule chosen on the other folds' patients, applied to the fold's own;
    pooled presence and extent metrics over all patients (with patient-bootstrap intervals);
    the rule chosen on all patients (``final``); and, for reference, the base rule's figures
    on the same predictions (``base``).

    Parameters
    ----------
    patients, labels, probs, folds
        One entry per OOF patch: patient id, label (0/1), cancer probability, fold index.
    base
        The rule whose words and reduction are kept (its numbers are chosen).
    """
    patients = np.asarray(patients).astype(str)
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    folds = np.asarray(folds)
    per_fold, rows = [], []
    for fold in np.unique(folds):
        inside = folds == fold
        rule = choose_rule(patients[~inside], labels[~inside], probs[~inside], base=base)
        per_fold.append({"fold": int(fold), **_numbers(rule)})
        verdicts = rule.apply_groups(patients[inside], probs[inside])
        for patient, verdict in verdicts.items():
            mine = patients == patient
            rows.append((patient, labels[mine].mean(), verdict.positive, verdict.extent))
    ids = np.array([r[0] for r in rows])
    true_share = np.array([r[1] for r in rows])
    called = np.array([bool(r[2]) for r in rows])
    extent = np.array([float(r[3] or 0.0) for r in rows])
    pooled = _pooled(ids, true_share, called, extent, n_boot=n_boot, seed=seed)
    final = choose_rule(patients, labels, probs, base=base)
    return {
        "protocol": "cross-fitted: each fold's rule chosen on the other folds' OOF patients",
        "per_fold": per_fold,
        "pooled": pooled,
        "final": _numbers(final),
        "final_rule": final.describe(),
        "base": {
            **_numbers(base),
            "metrics": _strip(
                patient_verdict_metrics(patients, labels, probs, rule=base, n_boot=0)
            ),
        },
    }


def _pooled(
    ids: np.ndarray,
    true_share: np.ndarray,
    called: np.ndarray,
    extent: np.ndarray,
    *,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Presence and extent over the cross-fitted verdicts, with bootstrap intervals."""
    truth = true_share > 0

    def figures(pick: np.ndarray) -> dict[str, Any]:
        t, c = truth[pick], called[pick]
        sens = float(c[t].mean()) if t.any() else None
        spec = float((~c[~t]).mean()) if (~t).any() else None
        return {
            "sensitivity": sens,
            "specificity": spec,
            **extent_agreement(true_share[pick], extent[pick]),
        }

    everyone = np.arange(len(ids))
    out = figures(everyone)
    result: dict[str, Any] = {
        "patients": len(ids),
        "positive_patients": int(truth.sum()),
        "negative_patients": int((~truth).sum()),
        "presence": {k: out[k] for k in ("sensitivity", "specificity")},
        "extent": {k: out[k] for k in ("mae", "bias", "pearson_r", "icc")},
    }
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        draws: dict[str, list[float]] = {}
        for _ in range(n_boot):
            sample = figures(rng.integers(0, len(ids), len(ids)))
            for key, value in sample.items():
                if isinstance(value, float):
                    draws.setdefault(key, []).append(value)
        result["ci95"] = {
            k: [round(float(np.percentile(v, 2.5)), 3), round(float(np.percentile(v, 97.5)), 3)]
            for k, v in sorted(draws.items())
        }
    return result


def _numbers(rule: VerdictRule) -> dict[str, Any]:
    return {"threshold": rule.threshold, "min_tiles": rule.min_tiles, "min_extent": rule.min_extent}


def _strip(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "per_patient"}
