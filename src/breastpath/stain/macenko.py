"""Macenko stain normalization, batched, in numpy or torch.

Macenko et al. (2009): take the optical density of stained pixels (every channel's OD at least
``beta``), find the plane of its two main principal directions (eigenvectors of the covariance,
as the SVD of the centred OD), measure each pixel's angle in that plane, and take the directions
at the ``alpha`` and ``100 - alpha`` angle percentiles as the two stains (hematoxylin: the larger
red OD). Concentrations are least squares; each stain is scaled so its ``percentile`` matches the
target's. Defaults (``io = 240``, ``alpha = 1``, ``beta = 0.15``, 99th percentile) follow the
original code and torchstain.
"""

from __future__ import annotations

from typing import Any

from breastpath.errors import StainError
from breastpath.stain import _ops
from breastpath.stain._backend import Ops
from breastpath.stain._coding import lstsq2
from breastpath.stain.separation import StainMatrixNormalizer


def macenko_stain_matrix(xp: Ops, od: Any, valid: Any, *, alpha: float = 1.0) -> Any:
    """Macenko stain matrices of planar OD samples ``(N, 3, S)`` where ``valid`` ``(N, S)``.

    Returns ``(N, 2, 3)``, rows hematoxylin then eosin, unit norm.

    Examples
    --------
    >>> import numpy as np
    >>> from breastpath.stain._backend import NumpyOps
    >>> rng = np.random.default_rng(0)
    >>> truth = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    >>> truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    >>> od = (rng.exponential(0.5, (5000, 2)) @ truth).T.astype(np.float32)[None]
    >>> found = macenko_stain_matrix(NumpyOps(), od, np.ones((1, 5000), bool))
    >>> bool(np.all(np.abs(found[0] - truth) < 0.05))
    True
    """
    weight = xp.float(valid)[:, None, :]
    count = xp.clip(weight.sum(2), 2.0)  # (N, 1)
    mean = (od * weight).sum(2) / count
    centred = (od - mean[:, :, None]) * weight
    cov = _ops.second_moments(xp, centred) / (count[..., None] - 1.0)
    _, vectors = xp.eigh(cov)
    first, second = vectors[..., 2], vectors[..., 1]  # largest, second-largest eigenvalue
    first = xp.where((first.sum(1) < 0)[:, None], -first, first)  # point into positive OD
    proj = _ops.combine(xp, od, xp.stack([first, second], axis=1))
    angle = xp.arctan2(proj[:, 1], proj[:, 0])[:, None, :]
    low = _ops.masked_percentile(xp, angle, valid, alpha)
    high = _ops.masked_percentile(xp, angle, valid, 100.0 - alpha)
    v_low = xp.cos(low) * first + xp.sin(low) * second
    v_high = xp.cos(high) * first + xp.sin(high) * second
    low_is_h = (v_low[:, 0] > v_high[:, 0])[:, None]
    hema = xp.where(low_is_h, v_low, v_high)
    eosin = xp.where(low_is_h, v_high, v_low)
    stains = xp.stack([hema, eosin], axis=1)
    norm = xp.sqrt((stains * stains).sum(2))
    return stains / xp.clip(norm, 1e-12)[..., None]


class MacenkoNormalizer(StainMatrixNormalizer):
    """Macenko stain normalization.

    Parameters
    ----------
    alpha
        Angle percentile (1: the directions at the 1st and 99th percentile angles).
    beta
        OD threshold: pixels with any channel's OD below it are not used to find the stains.
    io
        Transmitted light intensity of the OD conversion ``log(io) - log(I + 1)`` (240).
    **options
        ``percentile``, ``n_samples``, ``seed``, ``luminosity_threshold``,
        ``preserve_background``, ``background_luminosity``, ``device``: see
        :class:`~breastpath.stain.separation.StainMatrixNormalizer`.

    Examples
    --------
    >>> import numpy as np
    >>> from breastpath.stain import get_normalizer
    >>> rng = np.random.default_rng(0)
    >>> he = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]])
    >>> od = rng.exponential(0.4, (64 * 64, 2)) @ he
    >>> tile = (240 * np.exp(-od) - 1).clip(0, 255).astype(np.uint8).reshape(64, 64, 3)
    >>> get_normalizer("macenko").fit(tile).transform(tile).dtype
    dtype('uint8')
    """

    method = "macenko"

    def __init__(
        self, *, alpha: float = 1.0, beta: float = 0.15, io: float = 240.0, **options: Any
    ) -> None:
        super().__init__(**options)
        if not 0.0 <= float(alpha) < 50.0:
            raise StainError(f"alpha must be in [0, 50), got {alpha}")
        if float(io) <= 1.0:
            raise StainError(f"io must be greater than 1, got {io}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.io = float(io)

    def get_options(self) -> dict[str, Any]:
        return {**super().get_options(), "alpha": self.alpha, "beta": self.beta, "io": self.io}

    def _stain_mask(self, xp: Ops, od: Any, tissue: Any) -> Any:
        return (od >= self.beta).all(1)

    def _stain_matrices(self, xp: Ops, od: Any, valid: Any) -> Any:
        return macenko_stain_matrix(xp, od, valid, alpha=self.alpha)

    def _concentrations(self, xp: Ops, od: Any, stains: Any) -> Any:
        return lstsq2(xp, stains, od)
