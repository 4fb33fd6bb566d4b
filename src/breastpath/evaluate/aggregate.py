"""Patch (tile) scores -> patient scores.

A patient's label is positive when any of its patches is labelled positive. By default, the
patient score = mean of its patch probabilities; ``reduce="max"`` takes the highest patch
probability and ``reduce="fraction"`` the fraction of patches with probability >= ``threshold``.
:func:`describe_patient_score` gives that rule as one sentence for reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breastpath.choices import PATIENT_REDUCES
from breastpath.errors import ConfigError
from breastpath.evaluate.metrics import _validate_binary, _validate_threshold

__all__ = ["REDUCTIONS", "describe_patient_score", "patient_scores"]

#: Accepted values of ``reduce``.
REDUCTIONS: tuple[str, ...] = PATIENT_REDUCES


def patient_scores(
    patients: Any,
    y_true: Any,
    scores: Any,
    *,
    reduce: str = "mean",
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Aggregate per-patch labels and probabilities into one label and one score per patient.

    The patient score = mean of its patch probabilities (``reduce="mean"``, the default), or
    the maximum of its patch probabilities (``reduce="max"``), or the fraction of its patches
    with probability ``>= threshold`` (``reduce="fraction"``). The patient label is 1 if any
    of its patches is labelled 1. Vectorised (one ``np.unique`` and a few ``np.bincount``).

    Parameters
    ----------
    patients : array-like of shape (n,)
        Patient id of each patch (any type; compared as ``str``).
    y_true : array-like of shape (n,)
        Patch labels, 0 or 1.
    scores : array-like of shape (n,)
        Patch probabilities of the positive class, in ``[0, 1]``.
    reduce : {"mean", "max", "fraction"}
        How patch probabilities become a patient score.
    threshold : float
        Patch threshold used by ``reduce="fraction"`` only.

    Returns
    -------
    dict
        ``patients`` (list of str, sorted as strings), ``y_true`` (int64 array),
        ``scores`` (float64 array) and ``n_patches`` (int64 array), aligned with ``patients``.

    Examples
    --------
    >>> r = patient_scores(["b", "a", "b", "a"], [0, 0, 1, 0], [0.2, 0.1, 0.8, 0.3])
    >>> r["patients"], r["y_true"].tolist(), r["scores"].round(2).tolist()
    (['a', 'b'], [0, 1], [0.2, 0.5])
    """
    if reduce not in REDUCTIONS:
        raise ConfigError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")
    t = _validate_threshold(threshold)
    y, s = _validate_binary(y_true, scores)
    p = np.asarray(patients)
    if p.ndim != 1 or p.shape[0] != y.shape[0]:
        raise ConfigError(
            f"patients must be a 1-D array of length {y.shape[0]} (one id per patch), "
            f"got shape {p.shape}"
        )

    ids, inverse = np.unique(p.astype(str), return_inverse=True)
    inverse = inverse.reshape(-1)
    k = ids.shape[0]
    n_patches = np.bincount(inverse, minlength=k)
    label = (np.bincount(inverse, weights=y, minlength=k) > 0).astype(np.int64)

    if reduce == "mean":
        score = np.bincount(inverse, weights=s, minlength=k) / n_patches
    elif reduce == "max":
        score = np.full(k, -np.inf)
        np.maximum.at(score, inverse, s)
    else:
        above = (s >= t).astype(np.float64)
        score = np.bincount(inverse, weights=above, minlength=k) / n_patches

    return {
        "patients": ids.tolist(),
        "y_true": label,
        "scores": np.clip(score, 0.0, 1.0),  # the mean can round a hair above 1
        "n_patches": n_patches.astype(np.int64),
    }


def describe_patient_score(reduce: str = "mean", *, threshold: float = 0.5) -> str:
    """One sentence saying how patient labels and scores were computed, for reports.

    Examples
    --------
    >>> describe_patient_score("mean")[:60]
    'Patient score = mean of its patch probabilities; a patient i'
    """
    if reduce not in REDUCTIONS:
        raise ConfigError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")
    rule = {
        "mean": "mean of its patch probabilities",
        "max": "maximum of its patch probabilities",
        "fraction": f"fraction of its patches with probability >= {threshold:g}",
    }[reduce]
    return (
        f"Patient score = {rule}; a patient is labelled positive when any of its patches is "
        "labelled positive."
    )
