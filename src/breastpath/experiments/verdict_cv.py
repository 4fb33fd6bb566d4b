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
- ``min_tiles`` and ``min_extent``: the highest balanced accuracy of presence (ties: the higher
  sensitivity, then the smaller numbers), over :data:`MIN_TILES` x :data:`MIN_EXTENTS`.
  Sensitivity is taken over the patients with IDC. Specificity is taken over the patients
  without IDC *and* over every patient's own tumour-free tissue (its patches labelled
  negative, when it has at least :data:`MIN_PSEUDO_PATCHES`): IDC data hold few patients
  without IDC (5 of 185 here), too few to weigh false calls against missed tumours, while
  every patient's tumour-free patches show how many false calls tumour-free tissue draws. They
  come from tissue beside a tumour, so they err on the strict side.

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

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from breastpath.evaluate.patients import extent_agreement, patient_verdict_metrics
from breastpath.inference.verdict import VerdictRule

__all__ = [
    "MIN_EXTENTS",
    "MIN_TILES",
    "THRESHOLDS",
    "choose_rule",
    "cross_fit_oof",
    "cross_fit_rule",
    "shipped_verdict",
]

#: Candidate tile thresholds for the verdict and the extent.
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.05, 0.96, 0.01))
#: Candidate least numbers of called patches.
MIN_TILES = (1, 2, 3, 5)
#: Candidate least shares of called patches.
MIN_EXTENTS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
#: A patient's tumour-free patches count as a tumour-free "patient" from this many on.
MIN_PSEUDO_PATCHES = 10


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
    errors = [
        np.abs(_called_shares(inverse, n, probs, t)[1] - true_share).mean() for t in THRESHOLDS
    ]
    threshold = THRESHOLDS[int(np.argmin(errors))]
    k, f = _choose_counts(inverse, n, labels, probs, threshold)
    return replace(base, threshold=threshold, min_tiles=k, min_extent=f)


def _presence_sets(
    inverse: np.ndarray, n: int, labels: np.ndarray, probs: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Called counts and shares of the patients with IDC (all their patches), and of the
    tumour-free sets: patients without IDC, and each patient's own negative patches."""
    called, share = _called_shares(inverse, n, probs, threshold)
    truth = np.bincount(inverse, weights=labels, minlength=n) > 0
    negative = labels == 0
    neg_called, neg_share = _called_shares(inverse[negative], n, probs[negative], threshold)
    neg_count = np.bincount(inverse[negative], minlength=n)
    pseudo = truth & (neg_count >= MIN_PSEUDO_PATCHES)
    free_called = np.r_[called[~truth], neg_called[pseudo]]
    free_share = np.r_[share[~truth], neg_share[pseudo]]
    return called[truth], share[truth], free_called, free_share


def _choose_counts(
    inverse: np.ndarray, n: int, labels: np.ndarray, probs: np.ndarray, threshold: float
) -> tuple[int, float]:
    """``min_tiles`` and ``min_extent`` of the best presence balanced accuracy (see the module
    docstring)."""
    pos_called, pos_share, free_called, free_share = _presence_sets(
        inverse, n, labels, probs, threshold
    )
    if not len(pos_called) or not len(free_called):
        return MIN_TILES[0], MIN_EXTENTS[0]
    best: tuple[float, float, float, float] | None = None
    choice = (MIN_TILES[0], MIN_EXTENTS[0])
    for k in MIN_TILES:
        for f in MIN_EXTENTS:
            sens = ((pos_called >= k) & (pos_share >= f)).mean()
            spec = 1.0 - ((free_called >= k) & (free_share >= f)).mean()
            key = ((sens + spec) / 2, sens, -k, -f)
            if best is None or key > best:
                best, choice = key, (k, f)
    return choice


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
    per_fold, rows, free_calls = [], [], []
    for fold in np.unique(folds):
        inside = folds == fold
        rule = choose_rule(patients[~inside], labels[~inside], probs[~inside], base=base)
        per_fold.append({"fold": int(fold), **_numbers(rule)})
        verdicts = rule.apply_groups(patients[inside], probs[inside])
        for patient, verdict in verdicts.items():
            mine = patients == patient
            rows.append((patient, labels[mine].mean(), verdict.positive, verdict.extent))
            negative = probs[mine & (labels == 0)]
            if labels[mine].any() and len(negative) >= MIN_PSEUDO_PATCHES:
                free_calls.append(bool(rule.apply(negative).positive))
    ids = np.array([r[0] for r in rows])
    true_share = np.array([r[1] for r in rows])
    called = np.array([bool(r[2]) for r in rows])
    extent = np.array([float(r[3] or 0.0) for r in rows])
    pooled = _pooled(ids, true_share, called, extent, n_boot=n_boot, seed=seed)
    pooled["presence"]["specificity_tumour_free_tissue"] = (
        1.0 - float(np.mean(free_calls)) if free_calls else None
    )
    pooled["tumour_free_sets"] = len(free_calls)
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


def cross_fit_oof(
    rows: Sequence[Mapping[str, Any]],
    *,
    base: VerdictRule,
    column: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """:func:`cross_fit_rule` on the rows of an ``oof_predictions.csv`` (``patient``, ``label``,
    ``fold`` and the positive class's probability ``column``, default the last ``p_<class>``)."""
    column = column or [key for key in rows[0] if key.startswith("p_")][-1]
    return cross_fit_rule(
        np.array([r["patient"] for r in rows]),
        np.array([int(r["label"]) for r in rows]),
        np.array([float(r[column]) for r in rows]),
        np.array([int(r["fold"]) for r in rows]),
        base=base,
        n_boot=n_boot,
        seed=seed,
    )


def shipped_verdict(
    chosen: Mapping[str, Any], *, temperature: float, logit_bias: Sequence[float] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint's ``verdict`` numbers and its ``metrics.verdict_crossval`` figures from a
    :func:`cross_fit_rule` result: the rule chosen on all patients, its tile threshold (chosen
    on raw probabilities) carried onto the checkpoint's calibrated scale
    (:func:`~breastpath.evaluate.calibration.threshold_on_calibrated_scale`), every tile's
    decision unchanged."""
    from breastpath.evaluate.calibration import threshold_on_calibrated_scale

    final = chosen["final"]
    threshold = threshold_on_calibrated_scale(
        float(final["threshold"]), temperature=temperature, logit_bias=logit_bias
    )
    verdict = {
        "threshold": round(threshold, 6),
        "min_tiles": int(final["min_tiles"]),
        "min_extent": float(final["min_extent"]),
    }
    figures = {k: chosen[k] for k in ("protocol", "pooled", "per_fold")}
    figures["raw_threshold"] = final["threshold"]
    return verdict, figures
