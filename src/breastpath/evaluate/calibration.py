"""Calibration: how far predicted probabilities are from observed frequencies, and a fix for it.

- :func:`reliability_bins` / :func:`expected_calibration_error`: the reliability diagram and
  its ECE (equal-width bins, weighted by the share of items in each bin; Guo et al. 2017).
- :func:`fit_temperature`: temperature scaling, one scalar ``T`` fitted by minimising the
  negative log-likelihood of ``softmax(log p / T)`` (``log p`` equals the logits up to a
  per-row constant, so the probabilities a model stores are enough).
- :func:`fit_platt`: Platt scaling of a binary model, a temperature and a logit shift (the
  shift is what a class-weighted loss leaves, which no temperature can undo).
- :func:`crossfit_temperature`: out-of-fold probabilities calibrated honestly: each fold's
  items get the temperature fitted on the *other* folds, so the ECE after calibration is not
  measured on the data the temperature was fitted to.

A temperature keeps each row's ranking of classes; for a binary model it keeps the ranking of
items, so ROC-AUC is unchanged and a threshold ``t`` maps to ``sigmoid(logit(t) / T)``.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def apply_platt(probs: Any, temperature: float, shift: float) -> np.ndarray:
    """Binary probabilities after Platt scaling: ``p1 = sigmoid((z + shift) / T)`` with ``z`` the
    logit difference ``log p1 - log p0`` (what ``softmax((logits + [0, shift]) / T)`` gives).

    Examples
    --------
    >>> apply_platt([[0.5, 0.5]], 1.0, 1.0).round(3).tolist()
    [[0.269, 0.731]]
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)
    z = (np.log(p[:, 1]) - np.log(p[:, 0]) + shift) / temperature
    p1 = 1.0 / (1.0 + np.exp(-z))
    return np.c_[1.0 - p1, p1]


def fit_platt(probs: Any, labels: Any) -> tuple[float, float]:
    """``(temperature, shift)`` minimising the negative log-likelihood of binary ``labels``
    under :func:`apply_platt` (Platt 1999 on the logit difference): a temperature and the shift
    that moves every score, such as the one a class-weighted loss leaves.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p1 = rng.choice([0.2, 0.6], size=4000)
    >>> y = (rng.random(4000) < p1).astype(int)
    >>> shifted = apply_platt(np.c_[1 - p1, p1], 1.0, 1.5)  # every score pushed up
    >>> t, shift = fit_platt(shifted, y)
    >>> 0.8 < t < 1.25 and -1.9 < shift < -1.1
    True
    """
    from scipy.optimize import minimize

    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) != len(y) or len(y) == 0:
        raise ConfigError("Platt scaling needs binary probs (N, 2) with one label per row")

    def nll(params: np.ndarray) -> float:
        scaled = apply_platt(p, float(np.exp(params[0])), float(params[1]))
        return float(-np.log(np.clip(scaled[np.arange(len(y)), y], _EPS, 1.0)).mean())

    found = minimize(nll, x0=np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-5})
    temperature = float(np.clip(np.exp(found.x[0]), T_MIN, T_MAX))
    return temperature, float(np.clip(found.x[1], -50.0, 50.0))


def calibration_summary(y_true: Any, scores: Any, *, bins: int = 15) -> dict[str, Any]:
    """ECE, Brier score and the reliability table of binary cancer scores (for reports)."""
    y, p = _binary(y_true, scores)
    return {
        "ece": round(expected_calibration_error(y, p, bins=bins), 6),
        "brier": round(float(np.mean((p - y) ** 2)), 6) if len(y) else None,
        "bins": bins,
        "reliability": reliability_bins(y, p, bins=bins),
    }


#: How the build scripts' scaling was chosen (stored with it in the checkpoint).
TEMPERATURE_RULE = (
    "fitted (negative log-likelihood) on the pooled out-of-fold predictions of the "
    "cross-validation, kept because it lowers their cross-fitted ECE; the threshold is moved "
    "with it, so no decision changes"
)


def out_of_fold_calibration(
    probs: Any, labels: Any, folds: Any, *, method: str = "temperature"
) -> tuple[tuple[float, float], dict[str, Any]]:
    """``(temperature, shift)`` fitted on pooled out-of-fold ``probs`` (what a model trained on
    every fold's patients is given; ``shift`` is 0 for ``method="temperature"``, Platt's for
    ``"platt"``, binary only), and the ECE and Brier score of the last class before and after;
    "after" is cross-fitted (each fold at the scaling fitted on the other folds), so it is not
    measured on the rows its scaling was fitted on. ``helps`` says whether the cross-fitted ECE
    is lower than the raw one (apply the scaling only then).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> p1 = rng.choice([0.3, 0.7], size=4000)
    >>> y = (rng.random(4000) < p1).astype(int)
    >>> sharp = apply_temperature(np.c_[1 - p1, p1], 0.25)
    >>> (t, shift), report = out_of_fold_calibration(sharp, y, np.arange(4000) % 4)
    >>> 3.5 < t < 4.5, shift, report["helps"]
    (True, 0.0, True)
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    f = np.asarray(folds)

    def fit(q: np.ndarray, t: np.ndarray) -> tuple[float, float]:
        return fit_platt(q, t) if method == "platt" else (fit_temperature(q, t), 0.0)

    def apply(q: np.ndarray, scaling: tuple[float, float]) -> np.ndarray:
        if method == "platt":
            return apply_platt(q, *scaling)
        return apply_temperature(q, scaling[0])

    if method not in ("temperature", "platt"):
        raise ConfigError(f"unknown calibration method {method!r}")
    scaling = fit(p, y)
    crossfit = np.empty_like(p)
    for fold in np.unique(f):
        held = f == fold
        crossfit[held] = apply(p[held], fit(p[~held], y[~held]))
    truth = (y == p.shape[1] - 1).astype(int)

    def scores(q: np.ndarray) -> dict[str, Any]:
        summary = calibration_summary(truth, q[:, -1])
        return {"ece": summary["ece"], "brier": summary["brier"]}

    raw, after = scores(p), scores(crossfit)
    return scaling, {
        "method": method,
        "temperature": round(scaling[0], 4),
        "shift": round(scaling[1], 4),
        "raw": raw,
        "calibrated_out_of_fold": after,
        # a temperature only rescales confidence: when the error is a shift (class-weighted
        # training moves every probability towards the rarer class) it can make ECE worse
        "helps": bool(after["ece"] < raw["ece"]),
    }


def threshold_on_calibrated_scale(
    raw: float, *, temperature: float, logit_bias: Sequence[float] | None
) -> float:
    """A binary threshold on raw probabilities (temperature 1, no bias) carried onto a
    checkpoint's calibrated scale, so that every decision stays the same:
    ``sigmoid((logit(raw) + shift) / temperature)``, ``shift = bias[1] - bias[0]``.

    Examples
    --------
    >>> threshold_on_calibrated_scale(0.5, temperature=2.0, logit_bias=None)
    0.5
    >>> round(threshold_on_calibrated_scale(0.8, temperature=2.0, logit_bias=[0.0, -1.0]), 4)
    0.5481
    """
    t = float(np.clip(raw, 1e-9, 1 - 1e-9))
    shift = 0.0 if not logit_bias else float(logit_bias[1]) - float(logit_bias[0])
    return float(1.0 / (1.0 + np.exp(-(np.log(t / (1 - t)) + shift) / temperature)))


def with_temperature(
    meta: CheckpointMeta, temperature: float, *, rule: str, shift: float = 0.0
) -> CheckpointMeta:
    """``meta`` at a new temperature (and, for Platt scaling, a logit ``shift`` of the last
    class), its threshold moved so that every decision of a binary model stays the same;
    ``rule`` says where the scaling comes from (stored in ``extra["calibration"]``).

    Examples
    --------
    >>> from breastpath.checkpoint import load_checkpoint
    >>> meta = load_checkpoint("default").meta
    >>> hot = with_temperature(meta, 2.0, rule="example")
    >>> hot.temperature, round(hot.threshold, 4) != round(meta.threshold, 4)
    (2.0, True)
    >>> with_temperature(meta, 1.0, shift=-1.0, rule="example").logit_bias
    (0.0, -1.0)
    """
    if not meta.is_binary:
        raise ConfigError("temperature scaling of a checkpoint needs a binary model")
    if not T_MIN <= temperature <= T_MAX:
        raise ConfigError(f"temperature must be in [{T_MIN}, {T_MAX}], got {temperature}")
    old_bias = meta.logit_bias or (0.0, 0.0)
    t = float(np.clip(meta.threshold, 1e-9, 1 - 1e-9))
    z = np.log(t / (1 - t)) * meta.temperature - (old_bias[1] - old_bias[0])  # network logit
    threshold = float(1 / (1 + np.exp(-(z + shift) / temperature)))
    calibration = {"temperature": temperature, "shift": shift, "rule": rule}
    return meta.replace(
        temperature=float(temperature),
        logit_bias=[0.0, float(shift)] if shift else None,
        threshold=threshold,
        extra={**meta.extra, "calibration": calibration},
    )


def best_out_of_fold_calibration(
    probs: Any, labels: Any, folds: Any
) -> tuple[tuple[float, float], dict[str, Any]]:
    """:func:`out_of_fold_calibration` by temperature and, for a binary model, by Platt
    scaling; the one with the lower cross-fitted ECE (the report lists both ECEs)."""
    methods = ("temperature", "platt") if np.asarray(probs).shape[1] == 2 else ("temperature",)
    fitted = {m: out_of_fold_calibration(probs, labels, folds, method=m) for m in methods}
    best = min(methods, key=lambda m: fitted[m][1]["calibrated_out_of_fold"]["ece"])
    scaling, report = fitted[best]
    report["cross_fitted_ece_by_method"] = {
        m: fitted[m][1]["calibrated_out_of_fold"]["ece"] for m in methods
    }
    return scaling, report


def describe_calibration(report: dict[str, Any]) -> str:
    """One paragraph for a model card from an :func:`out_of_fold_calibration` report."""
    raw, after = report["raw"], report["calibrated_out_of_fold"]
    t, shift = report["temperature"], report.get("shift", 0.0)
    scaling = (
        f"softmax((logits + [0, {shift:.3f}]) / {t:.3f})" if shift else f"softmax(logits / {t:.3f})"
    )
    figures = (
        f"Expected calibration error (15 bins) / Brier score of the pooled out-of-fold "
        f"predictions: raw {raw['ece']:.3f} / {raw['brier']:.3f}; scaled as {scaling} "
        f"(cross-fitted: each fold at the scaling fitted on the other folds) "
        f"{after['ece']:.3f} / {after['brier']:.3f}."
    )
    if report["helps"]:
        return (
            f"Probabilities are {scaling}, fitted ({report['method']}, negative log-likelihood) "
            "on the pooled out-of-fold predictions of the cross-validation; the threshold is on "
            f"that scale. {figures}"
        )
    return (
        "No scaling is applied: the probabilities are the network's own softmax, because the "
        f"fitted one did not lower the cross-fitted ECE. {figures} Read the probability as a "
        "score and decide with the threshold; it is not a calibrated risk."
    )
