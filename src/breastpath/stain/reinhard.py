"""Reinhard colour normalization: match the mean and standard deviation of each L*a*b* channel.

Reinhard et al. (2001), as in staintools and torchstain: convert to CIE L*a*b*, standardise each
channel with the image's statistics, rescale with the target's, convert back. With
``preserve_background`` (the default) the statistics are computed on tissue pixels only and the
background is kept; with ``preserve_background=False`` every pixel counts and is transformed,
which is the reference behaviour.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from breastpath.errors import StainError
from breastpath.stain import _ops
from breastpath.stain._backend import Ops
from breastpath.stain.base import MIN_TISSUE_PIXELS, StainNormalizer, target_array

#: Channels with a smaller standard deviation (L*a*b* units) are treated as constant.
_MIN_STD = 1e-3


class ReinhardNormalizer(StainNormalizer):
    """Reinhard L*a*b* mean/std normalization.

    Attributes
    ----------
    lab_mean, lab_std : numpy.ndarray or None
        The target's per-channel L*a*b* mean and standard deviation, shape (3,).

    Examples
    --------
    >>> import numpy as np
    >>> from breastpath.stain import get_normalizer
    >>> rng = np.random.default_rng(0)
    >>> target = rng.integers(80, 200, (32, 32, 3), dtype=np.uint8)
    >>> source = rng.integers(40, 180, (2, 32, 32, 3), dtype=np.uint8)
    >>> get_normalizer("reinhard").fit(target).transform(source).shape
    (2, 32, 32, 3)
    """

    method = "reinhard"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.lab_mean: np.ndarray | None = None
        self.lab_std: np.ndarray | None = None

    @property
    def is_fitted(self) -> bool:
        return self.lab_mean is not None

    def _stats(self, xp: Ops, lab: Any, mask: Any) -> tuple[Any, Any, Any]:
        weight = xp.float(mask)[:, None, :]
        count = weight.sum(2)  # (N, 1)
        mean = (lab * weight).sum(2) / xp.clip(count, 1.0)
        centred = (lab - mean[:, :, None]) * weight
        std = xp.sqrt((centred * centred).sum(2) / xp.clip(count, 1.0))
        return mean, std, count[:, 0]

    def _mask(self, xp: Ops, rgb: Any) -> Any:
        if self.preserve_background:
            return _ops.tissue_mask(xp, rgb, self.luminosity_threshold)
        return xp.ones_bool(tuple(rgb.shape[:2]))

    def _fit(self, batches: list[Any], xp: Ops) -> None:
        total, sums, squares = 0.0, np.zeros(3), np.zeros(3)
        for rgb in batches:  # pooled, in float64: sum and sum of squared deviations
            lab = xp.to_numpy(_ops.rgb_to_lab(xp, rgb)).astype(np.float64)
            lab = lab.transpose(0, 2, 1).reshape(-1, 3)
            mask = xp.to_numpy(self._mask(xp, rgb)).reshape(-1)
            lab = lab[mask]
            total += len(lab)
            sums += lab.sum(0)
            squares += (lab**2).sum(0)
        mean = sums / max(total, 1.0)
        std = np.sqrt(np.maximum(squares / max(total, 1.0) - mean**2, 0.0))
        if total < MIN_TISSUE_PIXELS or std.max() <= _MIN_STD:
            raise StainError("reinhard: the target images hold too little tissue, or one colour")
        self.lab_mean, self.lab_std = mean, std

    def _transform(self, rgb: Any, tissue: Any, xp: Ops) -> tuple[Any, Any]:
        mask = tissue if self.preserve_background else self._mask(xp, rgb)
        lab = _ops.rgb_to_lab(xp, rgb)
        mean, std, count = self._stats(xp, lab, mask)
        ok = (count >= MIN_TISSUE_PIXELS) & (xp.amax(std, 1) > _MIN_STD)
        scale = xp.asarray(self.lab_std)[None] / xp.clip(std, _MIN_STD)
        new = (lab - mean[:, :, None]) * scale[:, :, None] + xp.asarray(self.lab_mean)[
            None, :, None
        ]
        return _ops.lab_to_rgb(xp, new), ok

    def _target_to_dict(self) -> dict[str, Any]:
        assert self.lab_mean is not None and self.lab_std is not None
        return {"lab_mean": self.lab_mean.tolist(), "lab_std": self.lab_std.tolist()}

    def _target_from_dict(self, target: dict[str, Any]) -> None:
        self.lab_mean = target_array(target.get("lab_mean"), (3,), "lab_mean")
        self.lab_std = target_array(target.get("lab_std"), (3,), "lab_std")
