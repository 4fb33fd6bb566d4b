"""Optimizer, learning-rate schedule and class weights of the training loop."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from breastpath.config import OptimConfig


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * n_c)``, as sklearn's ``class_weight="balanced"``.

    A class absent from ``labels`` gets weight 0: with label smoothing, a large weight on it
    would pull every prediction towards a class the model never sees (a cross-validation fold
    can hold out a subtype's only patient).

    Examples
    --------
    >>> class_weights(np.array([0, 0, 1, 2]), 4).tolist()
    [0.5, 1.0, 1.0, 0.0]
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1.0)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def make_optimizer(params: Iterable[Any], optim: OptimConfig) -> torch.optim.Optimizer:
    """Adagrad (CancerNet's choice), Adam/AdamW, or SGD with Nesterov momentum."""
    if optim.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.optimizer == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    return torch.optim.SGD(
        params, lr=optim.lr, momentum=optim.momentum, nesterov=True, weight_decay=optim.weight_decay
    )


def lr_at(epoch: int, optim: OptimConfig, *, epochs: int) -> float:
    """Learning rate of an epoch (0-based) of ``epochs``: linear warm-up, then cosine, step or
    constant.

    Examples
    --------
    >>> optim = OptimConfig(lr=0.1, warmup_epochs=1)
    >>> [round(lr_at(e, optim, epochs=3), 4) for e in range(3)]
    [0.05, 0.1, 0.051]
    """
    if epoch < optim.warmup_epochs:
        return optim.lr * (epoch + 1) / (optim.warmup_epochs + 1)
    if optim.schedule == "cosine":
        span = max(epochs - optim.warmup_epochs, 1)
        progress = (epoch - optim.warmup_epochs) / span
        return optim.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
    if optim.schedule == "step":
        return optim.lr * (0.1 ** (epoch // max(epochs // 3, 1)))
    return optim.lr
