"""Calibration: how far predicted probabilities are from observed frequencies, and a fix for it.

- :func:`reliability_bins` / :func:`expected_calibration_error`: the reliability diagram and
  its ECE (equal-width bins, weighted by the share of items in each bin; Guo et al. 2017).
- :func:`fit_temperature`: temperature scaling, one scalar ``T`` fitted by minimising the
  negative log-likelihood of ``softmax(log p / T)`` (``log p`` equals the logits up to a
  per-row constant, so the probabilities a model stores are enough).
- :func:`crossfit_temperature`: out-of-fold probabilities calibrated honestly: each fold's
  items get the temperature fitted on the *other* folds, so the ECE after calibration is not
  measured on the data the temperature was fitted to.

A temperature keeps each row's ranking of classes; for a binary model it keeps the ranking of
items, so ROC-AUC is unchanged and a threshold ``t`` maps to ``sigmoid(logit(t) / T)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breastpath.checkpoint import CheckpointMeta
from breastpath.errors import ConfigError

#: Temperatures searched by :func:`fit_temperature` (log-uniform bounds).
T_MIN, T_MAX = 0.05, 20.0
_EPS = 1e-12


def _binary(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ConfigError(f"labels and scores must be 1-D of one length, got {y.shape}, {p.shape}")
    in_range = np.isfinite(p).all() and ((p >= -1e-6) & (p <= 1 + 1e-6)).all()
    if not np.isin(y, (0, 1)).all() or not in_range:
        raise ConfigError("labels must be 0/1 and scores finite probabilities in [0, 1]")
    return y, np.clip(p, 0.0, 1.0)


def reliability_bins(y_true: Any, scores: Any, *, bins: int = 15) -> dict[str, list[Any]]:
    """Per equal-width bin of predicted probability: the mean prediction, the observed fraction
    of positives, and the count (empty bins have ``None`` means).

    Examples
    --------
    >>> r = reliability_bins([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], bins=2)
    >>> r["mean_predicted"], r["fraction_positive"], r["count"]
    ([0.15, 0.85], [0.0, 1.0], [2, 2])
    """
    y, p = _binary(y_true, scores)
    if bins < 1:
        raise ConfigError("bins must be >= 1")
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    total_p = np.bincount(index, weights=p, minlength=bins)
    total_y = np.bincount(index, weights=y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, frac_y = total_p / count, total_y / count
    return {
        "edges": np.linspace(0.0, 1.0, bins + 1).round(6).tolist(),
        "mean_predicted": _per_bin(mean_p, count),
        "fraction_positive": _per_bin(frac_y, count),
        "count": count.astype(int).tolist(),
    }


def _per_bin(values: np.ndarray, count: np.ndarray) -> list[float | None]:
    return [None if n == 0 else round(float(v), 6) for v, n in zip(values, count, strict=True)]


def expected_calibration_error(y_true: Any, scores: Any, *, bins: int = 15) -> float:
    """ECE: ``sum_b (n_b / n) |mean prediction_b - fraction positive_b|`` over equal-width bins.

    Examples
    --------
    >>> expected_calibration_error([0, 1], [0.0, 1.0])
    0.0
    >>> round(expected_calibration_error([0, 0, 1, 1], [0.4, 0.4, 0.6, 0.6], bins=10), 3)
    0.4
    """
    table = reliability_bins(y_true, scores, bins=bins)
    n = sum(table["count"])
    if n == 0:
        return 0.0
    gaps = [
        c * abs(m - f)
        for m, f, c in zip(
            table["mean_predicted"], table["fraction_positive"], table["count"], strict=True
        )
        if c
    ]
    return float(sum(gaps) / n)


def apply_temperature(probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / T)`` row by row: the probabilities at temperature ``T``.

    Examples
    --------
    >>> apply_temperature([[0.2, 0.8]], 1.0).round(3).tolist()
    [[0.2, 0.8]]
    >>> apply_temperature([[0.2, 0.8]], 2.0).round(3).tolist()
    [[0.333, 0.667]]
    """
    if not T_MIN <= float(temperature) <= T_MAX:
        raise ConfigError(f"temperature must be in [{T_MIN}, {T_MAX}], got {temperature}")
    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def _nll(probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = apply_temperature(probs, temperature)
    return float(-np.log(np.clip(scaled[np.arange(len(labels)), labels], _EPS, 1.0)).mean())


def fit_temperature(probs: Any, labels: Any) -> float:
    """The temperature in ``[T_MIN, T_MAX]`` minimising the negative log-likelihood of
    ``labels`` (class indices) under ``softmax(log probs / T)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p1 = rng.choice([0.3, 0.7], size=4000)
    >>> y = (rng.random(4000) < p1).astype(int)  # p1 is calibrated: 70% positive at 0.7
    >>> sharp = apply_temperature(np.c_[1 - p1, p1], 0.25)  # the same ranking, overconfident
    >>> 3.5 < fit_temperature(sharp, y) < 4.5  # undoes the 0.25 (up to sampling noise)
    True
    """
    from scipy.optimize import minimize_scalar

    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0:
        raise ConfigError("probs must be (N, classes) with one label per row, N >= 1")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ConfigError("labels must be class indices of probs' columns")
    found = minimize_scalar(
        lambda log_t: _nll(p, y, float(np.exp(log_t))),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))


def crossfit_temperature(probs: Any, labels: Any, folds: Any) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold probabilities calibrated with, for each fold, the temperature fitted on the
    other folds; returns them and the temperature used per fold (in sorted fold order).

    Examples
    --------
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> calibrated, temps = crossfit_temperature(p, [0, 1, 1, 1], [0, 0, 1, 1])
    >>> calibrated.shape, len(temps)
    ((4, 2), 2)
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    f = np.asarray(folds)
    out = np.empty_like(p)
    temperatures = []
    for fold in np.unique(f):
        held = f == fold
        if held.all():
            raise ConfigError("cross-fitting needs at least two folds")
        t = fit_temperature(p[~held], y[~held])
        out[held] = apply_temperature(p[held], t)
        temperatures.append(t)
    return out, temperatures


def calibration_summary(y_true: Any, scores: Any, *, bins: int = 15) -> dict[str, Any]:
    """ECE, Brier score and the reliability table of binary cancer scores (for reports)."""
    y, p = _binary(y_true, scores)
    return {
        "ece": round(expected_calibration_error(y, p, bins=bins), 6),
        "brier": round(float(np.mean((p - y) ** 2)), 6) if len(y) else None,
        "bins": bins,
        "reliability": reliability_bins(y, p, bins=bins),
    }


#: How the build scripts' temperature was chosen (stored with it in the checkpoint).
TEMPERATURE_RULE = (
    "fitted (negative log-likelihood) on the pooled out-of-fold predictions of the "
    "cross-validation, kept because it lowers their cross-fitted ECE; the threshold is moved "
    "with it, so no decision changes"
)


def out_of_fold_temperature(
    probs: Any, labels: Any, folds: Any, *, positive: int = -1
) -> tuple[float, dict[str, Any]]:
    """The temperature fitted on pooled out-of-fold ``probs`` (what a model trained on every
    fold's patients is given), and the ECE and Brier score of the ``positive`` class before and
    after it; "after" is cross-fitted (each fold at the temperature of the other folds), so it
    is not measured on the rows its temperature was fitted on. ``helps`` says whether the
    cross-fitted ECE is lower than the raw one (apply the temperature only then).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p1 = rng.choice([0.3, 0.7], size=4000)
    >>> y = (rng.random(4000) < p1).astype(int)
    >>> sharp = apply_temperature(np.c_[1 - p1, p1], 0.25)
    >>> t, report = out_of_fold_temperature(sharp, y, np.arange(4000) % 4)
    >>> 3.5 < t < 4.5, report["helps"]
    (True, True)
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    temperature = fit_temperature(p, y)
    crossfit, _ = crossfit_temperature(p, y, folds)
    truth = (y == (p.shape[1] - 1 if positive < 0 else positive)).astype(int)

    def scores(q: np.ndarray) -> dict[str, Any]:
        summary = calibration_summary(truth, q[:, positive])
        return {"ece": summary["ece"], "brier": summary["brier"]}

    raw, after = scores(p), scores(crossfit)
    return temperature, {
        "temperature": round(temperature, 4),
        "raw": raw,
        "calibrated_out_of_fold": after,
        # a temperature only rescales confidence: when the error is a shift (class-weighted
        # training moves every probability towards the rarer class) it can make ECE worse
        "helps": bool(after["ece"] < raw["ece"]),
    }


def with_temperature(meta: CheckpointMeta, temperature: float, *, rule: str) -> CheckpointMeta:
    """``meta`` at a new temperature, its threshold moved so that every decision of a binary
    model stays the same (``t -> sigmoid(logit(t) T_old / T_new)``); ``rule`` says where the
    temperature comes from (stored in ``extra["calibration"]``).

    Examples
    --------
    >>> from breastpath.checkpoint import load_checkpoint
    >>> meta = load_checkpoint("default").meta
    >>> hot = with_temperature(meta, 2.0, rule="example")
    >>> hot.temperature, round(hot.threshold, 4) != round(meta.threshold, 4)
    (2.0, True)
    """
    if not meta.is_binary:
        raise ConfigError("temperature scaling of a checkpoint needs a binary model")
    if not T_MIN <= temperature <= T_MAX:
        raise ConfigError(f"temperature must be in [{T_MIN}, {T_MAX}], got {temperature}")
    t = float(np.clip(meta.threshold, 1e-9, 1 - 1e-9))
    logit = np.log(t / (1 - t)) * meta.temperature / temperature
    threshold = float(1 / (1 + np.exp(-logit)))
    calibration = {"temperature": temperature, "rule": rule}
    return meta.replace(
        temperature=float(temperature),
        threshold=threshold,
        extra={**meta.extra, "calibration": calibration},
    )
