"""An RBF support-vector classifier as an ``nn.Module`` of plain tensors.

:class:`RBFSVMHead` reproduces scikit-learn's ``SVC(kernel="rbf")`` decision function and the
sigmoid (Platt) probabilities of ``CalibratedClassifierCV(SVC(...), method="sigmoid",
ensemble=False)`` from stored tensors: feature mean/scale (the ``StandardScaler``), support
vectors, one-vs-one dual coefficients, intercepts, ``gamma`` and the calibrators' ``a``/``b``.
Nothing is pickled; the tensors go into a safetensors checkpoint like any other weights.

Binary (sklearn signs)::

    z = (f - mean) / scale,   K = exp(-gamma * |z - sv|^2)
    decision = K @ dual_coef + intercept,    p1 = 1 / (1 + exp(a * decision + b))

Multiclass: the one-vs-one decisions become sklearn's ``ovr`` decision (votes plus scaled
confidences), one sigmoid per class, then the probabilities are normalised to sum to 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def _pair_coefficients(dual_coef: np.ndarray, n_support: np.ndarray) -> np.ndarray:
    """libsvm's ``(k-1, n_SV)`` dual coefficients -> a dense ``(n_SV, k(k-1)/2)`` matrix whose
    column ``p`` gives each support vector's weight in the one-vs-one decision of pair ``p``."""
    k = len(n_support)
    starts = np.concatenate([[0], np.cumsum(n_support)])
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    out = np.zeros((dual_coef.shape[1], len(pairs)))
    for p, (i, j) in enumerate(pairs):
        si, sj = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
        out[si, p] = dual_coef[j - 1, si]
        out[sj, p] = dual_coef[i, sj]
    return out


class RBFSVMHead(nn.Module):
    """Standardise features, RBF-SVM decision, calibrated probabilities.

    Parameters
    ----------
    num_classes
        Classes of the SVM (2 or more).
    feature_dim
        Length of the feature vectors.
    n_support
        Number of support vectors (all classes).

    The buffers start empty (zeros); fill them with :meth:`from_sklearn` or ``load_state_dict``.
    Computation runs in float64 for parity with scikit-learn.
    """

    # buffers (registered in __init__), declared for the type checker
    feature_mean: torch.Tensor
    feature_scale: torch.Tensor
    support_vectors: torch.Tensor
    pair_coef: torch.Tensor
    intercept: torch.Tensor
    gamma: torch.Tensor
    platt_a: torch.Tensor
    platt_b: torch.Tensor

    def __init__(self, *, num_classes: int, feature_dim: int, n_support: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("an SVM head needs at least 2 classes")
        pairs = num_classes * (num_classes - 1) // 2
        calibrators = 1 if num_classes == 2 else num_classes
        self.num_classes = num_classes
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_scale", torch.ones(feature_dim))
        self.register_buffer("support_vectors", torch.zeros(n_support, feature_dim))
        self.register_buffer("pair_coef", torch.zeros(n_support, pairs, dtype=torch.float64))
        self.register_buffer("intercept", torch.zeros(pairs, dtype=torch.float64))
        self.register_buffer("gamma", torch.ones((), dtype=torch.float64))
        self.register_buffer("platt_a", torch.zeros(calibrators, dtype=torch.float64))
        self.register_buffer("platt_b", torch.zeros(calibrators, dtype=torch.float64))

    @classmethod
    def from_sklearn(cls, scaler: Any, calibrated: Any) -> RBFSVMHead:
        """Copy a fitted ``StandardScaler`` and ``CalibratedClassifierCV(SVC(kernel="rbf"),
        method="sigmoid", ensemble=False)`` into a head."""
        (fitted,) = calibrated.calibrated_classifiers_
        svc = fitted.estimator
        if getattr(svc, "kernel", None) != "rbf" or fitted.method != "sigmoid":
            raise ValueError("only an RBF SVC with sigmoid calibration can be stored")
        classes = len(svc.classes_)
        sv = np.asarray(svc.support_vectors_, dtype=np.float64)
        head = cls(num_classes=classes, feature_dim=sv.shape[1], n_support=sv.shape[0])
        coef = _pair_coefficients(np.asarray(svc.dual_coef_), np.asarray(svc.n_support_))
        values = {
            "feature_mean": np.asarray(scaler.mean_),
            "feature_scale": np.asarray(scaler.scale_),
            "support_vectors": sv,
            "pair_coef": coef,
            "intercept": np.asarray(svc.intercept_),
            "gamma": np.asarray(svc._gamma),
            "platt_a": np.array([c.a_ for c in fitted.calibrators]),
            "platt_b": np.array([c.b_ for c in fitted.calibrators]),
        }
        for name, value in values.items():
            buffer = getattr(head, name)
            buffer.copy_(torch.as_tensor(value, dtype=buffer.dtype).reshape(buffer.shape))
        return head

    def decision_ovo(self, features: torch.Tensor) -> torch.Tensor:
        """One-vs-one decision values ``(N, k(k-1)/2)`` (libsvm order, sklearn signs)."""
        z = (features.double() - self.feature_mean.double()) / self.feature_scale.double()
        sv = self.support_vectors.double()
        sq = (z * z).sum(1, keepdim=True) + (sv * sv).sum(1) - 2.0 * z @ sv.T
        kernel = torch.exp(-self.gamma * sq.clamp_min(0.0))
        return kernel @ self.pair_coef + self.intercept

    def decision_function(self, features: torch.Tensor) -> torch.Tensor:
        """sklearn's ``SVC.decision_function``: ``(N,)`` when binary, ``(N, k)`` (ovr) else."""
        dec = self.decision_ovo(features)
        if self.num_classes == 2:
            return dec[:, 0]
        k = self.num_classes
        votes = dec.new_zeros(dec.shape[0], k)
        confidence = dec.new_zeros(dec.shape[0], k)
        p = 0
        for i in range(k):
            for j in range(i + 1, k):
                confidence[:, i] += dec[:, p]
                confidence[:, j] -= dec[:, p]
                votes[:, i] += (dec[:, p] >= 0).double()
                votes[:, j] += (dec[:, p] < 0).double()
                p += 1
        return votes + confidence / (3.0 * (confidence.abs() + 1.0))

    def predict_proba(self, features: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities ``(N, k)`` (float64), as sklearn's ``predict_proba``."""
        dec = self.decision_function(features)
        if self.num_classes == 2:
            positive = torch.sigmoid(-(self.platt_a[0] * dec + self.platt_b[0]))
            return torch.stack([1.0 - positive, positive], dim=1)
        probs = torch.sigmoid(-(self.platt_a * dec + self.platt_b))
        total = probs.sum(1, keepdim=True)
        uniform = torch.full_like(probs, 1.0 / self.num_classes)
        return torch.where(total > 0, probs / total.clamp_min(1e-300), uniform)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Log-probabilities: a softmax over them gives :meth:`predict_proba` back exactly."""
        return torch.log(self.predict_proba(features).clamp_min(1e-300)).float()
