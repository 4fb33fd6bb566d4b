"""The cancer score: one definition for training, evaluation, cross-validation, slides and serving.

A model outputs class probabilities; its *cancer score* is the summed probability of the classes
that mean cancer (``CheckpointMeta.cancer_classes``: the positive class of a binary model, every
malignant subtype of a BreakHis subtype model). The decision threshold is chosen on this score
and applied to this score, nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from breastpath.checkpoint import CheckpointMeta


def _classes(meta_or_classes: CheckpointMeta | Sequence[int]) -> list[int]:
    if isinstance(meta_or_classes, CheckpointMeta):
        return list(meta_or_classes.cancer_classes)
    return [int(i) for i in meta_or_classes]


def cancer_score(probs: np.ndarray, meta: CheckpointMeta | Sequence[int]) -> np.ndarray:
    """Probability of cancer per row: ``probs[:, cancer_classes].sum(axis=1)`` (float64).

    ``meta`` is a checkpoint's metadata or the cancer class indices themselves.

    Examples
    --------
    >>> probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    >>> cancer_score(probs, [2, 3]).round(2).tolist()
    [0.7, 0.2]
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (N, classes), got shape {probs.shape}")
    return probs[:, _classes(meta)].sum(axis=1)


def cancer_truth(labels: np.ndarray, meta: CheckpointMeta | Sequence[int]) -> np.ndarray:
    """1 where a class label is a cancer class, else 0 (int64): the truth ``cancer_score`` is
    compared with.

    Examples
    --------
    >>> cancer_truth(np.array([0, 2, 3, 1]), [2, 3]).tolist()
    [0, 1, 1, 0]
    """
    return np.isin(np.asarray(labels), _classes(meta)).astype(np.int64)
