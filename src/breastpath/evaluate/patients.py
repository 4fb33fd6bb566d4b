"""Patient (or slide) level: the verdict rule's presence and extent against the truth.

A patient's tiles (patches) reach one verdict through the model's one verdict rule
(:class:`~breastpath.inference.verdict.VerdictRule`), the rule every entry point applies:

**Presence**: the verdict (positive or not) against the truth (positive when any of the
patient's patches is labelled positive): sensitivity, specificity, balanced accuracy, with the
counts. With fewer than :data:`MIN_NEGATIVE_PATIENTS` negative (or positive) patients the
specificity (or sensitivity) is not an estimate worth the name, and ``warnings`` says so loudly.

**Extent**: the share of the patient's assessed patches the rule calls positive, against the
true share (its patches labelled positive): mean absolute error, bias (mean of predicted minus
true), Pearson r and the intraclass correlation ICC(A,1) (two-way, absolute agreement;
McGraw & Wong 1996), the figure Cruz-Roa et al. 2017 quantify tumour extent with.

95% intervals: percentile bootstrap over patients (seeded, local generator).

Examples
--------
>>> from breastpath.inference.verdict import VerdictRule
>>> rule = VerdictRule(reduction="presence", threshold=0.5)
>>> m = patient_verdict_metrics(["a", "a", "b", "b"], [1, 0, 0, 0], [0.9, 0.2, 0.1, 0.3],
...                             rule=rule, n_boot=0)
>>> m["presence"]["sensitivity"], m["presence"]["specificity"], m["extent"]["mae"]
(1.0, 1.0, 0.0)
>>> m["warnings"][0][:40]
'only 1 negative patient(s): specificity '
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from breastpath.errors import ConfigError
from breastpath.inference.verdict import VerdictRule

__all__ = ["MIN_NEGATIVE_PATIENTS", "extent_agreement", "patient_verdict_metrics"]

#: Below this many negative (positive) patients, specificity (sensitivity) is flagged.
MIN_NEGATIVE_PATIENTS = 10


def extent_agreement(true: np.ndarray, predicted: np.ndarray) -> dict[str, float | None]:
    """MAE, bias, Pearson r and ICC(A,1) of predicted against true extents.

    Examples
    --------
    >>> e = extent_agreement(np.array([0.0, 0.5, 1.0]), np.array([0.1, 0.5, 0.9]))
    >>> e["mae"], e["bias"], round(e["pearson_r"], 3)
    (0.067, 0.0, 1.0)
    """
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise ConfigError(f"extents differ in shape: {t.shape} and {p.shape}")
    out: dict[str, float | None] = {
        "mae": round(float(np.abs(p - t).mean()), 3) if t.size else None,
        "bias": round(float((p - t).mean()), 3) if t.size else None,
        "pearson_r": None,
        "icc": None,
    }
    if t.size >= 3 and t.std() > 0 and p.std() > 0:
        out["pearson_r"] = float(np.corrcoef(t, p)[0, 1])
        out["icc"] = _icc_agreement(np.stack([t, p], axis=1))
    return out


def _icc_agreement(ratings: np.ndarray) -> float:
    """ICC(A,1): two-way random effects, absolute agreement, single rater (McGraw & Wong)."""
    n, k = ratings.shape
    grand = ratings.mean()
    ms_rows = k * ((ratings.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_cols = n * ((ratings.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    resid = ratings - ratings.mean(axis=1, keepdims=True) - ratings.mean(axis=0) + grand
    ms_err = (resid**2).sum() / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n
    return float((ms_rows - ms_err) / denominator) if denominator > 0 else 0.0


def _presence(truth: np.ndarray, called: np.ndarray) -> dict[str, Any]:
    tp = int((truth & called).sum())
    fn = int((truth & ~called).sum())
    tn = int((~truth & ~called).sum())
    fp = int((~truth & called).sum())
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    bac = (sens + spec) / 2 if sens is not None and spec is not None else None
    return {
        "sensitivity": sens,
        "specificity": spec,
        "balanced_accuracy": bac,
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
    }


def _per_patient(
    patients: np.ndarray, truth: np.ndarray, scores: np.ndarray, rule: VerdictRule
) -> dict[str, np.ndarray]:
    """Arrays over patients (sorted as strings): truth, true extent, verdict and extent."""
    assessed = np.isfinite(scores)
    verdicts = rule.apply_groups(patients[assessed], scores[assessed])
    ids = np.array(sorted(verdicts))
    index = {p: i for i, p in enumerate(ids)}
    where = np.array([index[p] for p in patients[assessed]], dtype=np.int64)
    n = len(ids)
    positives = np.bincount(where, weights=truth[assessed], minlength=n)
    counts = np.bincount(where, minlength=n)
    return {
        "patients": ids,
        "truth": positives > 0,
        "true_extent": positives / np.maximum(counts, 1),
        "called": np.array([bool(verdicts[p].positive) for p in ids]),
        "extent": np.array([float(verdicts[p].extent or 0.0) for p in ids]),
        "tiles": counts,
    }


def _summary(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "presence": _presence(arrays["truth"], arrays["called"]),
        "extent": extent_agreement(arrays["true_extent"], arrays["extent"]),
    }


def _bootstrap(arrays: dict[str, np.ndarray], *, n_boot: int, seed: int) -> dict[str, Any]:
    """95% percentile intervals of the presence and extent figures, resampling patients."""
    rng = np.random.default_rng(seed)
    n = len(arrays["patients"])
    draws: dict[str, list[float]] = {}
    for _ in range(n_boot):
        pick = rng.integers(0, n, n)
        result = _summary({k: v[pick] for k, v in arrays.items()})
        for block in ("presence", "extent"):
            for key, value in result[block].items():
                if isinstance(value, float):
                    draws.setdefault(f"{block}.{key}", []).append(value)
    return {
        key: [round(float(np.percentile(v, 2.5)), 3), round(float(np.percentile(v, 97.5)), 3)]
        for key, v in sorted(draws.items())
        if len(v) >= n_boot // 2
    }


def patient_verdict_metrics(
    patients: Sequence[Any] | np.ndarray,
    y_true: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    *,
    rule: VerdictRule,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Presence and extent of the rule's per-patient verdicts against the truth.

    Parameters
    ----------
    patients, y_true, scores
        One entry per patch (tile): its patient, its label (0/1) and its cancer probability
        (NaN: not assessed by the quality gate; it counts for neither extent).
    rule
        The verdict rule (``predictor.verdict_rule(unit="patch")``).
    n_boot
        Bootstrap replicates for the 95% intervals (0: none).
    """
    p = np.asarray(patients).astype(str)
    t = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if not p.shape == t.shape == s.shape or p.ndim != 1:
        raise ConfigError(f"patients, labels and scores differ in shape: {p.shape} {t.shape}")
    arrays = _per_patient(p, t, s, rule)
    result: dict[str, Any] = {
        "rule": rule.describe(),
        "patients": len(arrays["patients"]),
        "positive_patients": int(arrays["truth"].sum()),
        "negative_patients": int((~arrays["truth"]).sum()),
        **_summary(arrays),
        "warnings": _warnings(arrays["truth"]),
        "per_patient": [
            {
                "patient": str(arrays["patients"][i]),
                "label": int(arrays["truth"][i]),
                "true_extent": round(float(arrays["true_extent"][i]), 6),
                "positive": bool(arrays["called"][i]),
                "extent": round(float(arrays["extent"][i]), 6),
                "tiles": int(arrays["tiles"][i]),
            }
            for i in range(len(arrays["patients"]))
        ],
    }
    if n_boot > 0 and len(arrays["patients"]) > 1:
        result["ci95"] = _bootstrap(arrays, n_boot=n_boot, seed=seed)
    return result


def _warnings(truth: np.ndarray) -> list[str]:
    out = []
    for count, what, metric in (
        (int((~truth).sum()), "negative", "specificity and balanced accuracy"),
        (int(truth.sum()), "positive", "sensitivity and balanced accuracy"),
    ):
        if count < MIN_NEGATIVE_PATIENTS:
            out.append(
                f"only {count} {what} patient(s): {metric} at patient level are not estimates "
                f"(fewer than {MIN_NEGATIVE_PATIENTS}); read the extent and the patch level"
            )
    return out
