"""Two-stain separation normalizers (Macenko, Vahadane): unmix, rescale, remix with the target.

The shared machinery of :class:`~breastpath.stain.MacenkoNormalizer` and
:class:`~breastpath.stain.VahadaneNormalizer`: a seeded pixel sample per image, a pluggable
stain-matrix estimator and concentration solver, percentile matching and reconstruction.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from breastpath.errors import StainError
from breastpath.stain import _backend, _ops
from breastpath.stain._backend import Ops
from breastpath.stain._coding import RUIFROK_HE
from breastpath.stain.base import MIN_TISSUE_PIXELS, StainNormalizer, target_array


def usable(xp: Ops, od: Any, valid: Any) -> Any:
    """(N,) bool: enough valid pixels, and their OD spans more than one colour direction."""
    count = valid.sum(1)
    moments = _ops.second_moments(xp, od * xp.float(valid)[:, None, :])  # uncentred, (N, 3, 3)
    eig = xp.eigvalsh(moments)
    spread = eig[:, 1] > 1e-4 * xp.clip(eig[:, 2], 1e-12)
    return (count >= MIN_TISSUE_PIXELS) & spread & xp.isfinite(eig).all(1)


class StainMatrixNormalizer(StainNormalizer):
    """Normalizers that separate two stains: ``OD = C @ S`` with a 2x3 stain matrix ``S``.

    A source image is unmixed with its own stain matrix, each stain's concentrations are scaled
    so that their ``percentile`` matches the target's, and the image is rebuilt with the target's
    stain matrix. Subclasses choose how the stain matrix is found and how concentrations are
    solved.

    Parameters
    ----------
    percentile
        Concentration percentile matched between source and target (99).
    n_samples
        Pixels per image (picked at random among its stained pixels) used to estimate its stain
        matrix and concentration percentile; every pixel is transformed.
    seed
        Seed of the pixel sample: results are deterministic for a seed, and an image gets the
        same sample alone or in any batch.
    **base
        ``luminosity_threshold``, ``preserve_background``, ``background_luminosity``, ``device``
        (see :class:`StainNormalizer`).

    Attributes
    ----------
    stain_matrix : numpy.ndarray or None
        Fitted target, shape (2, 3), rows hematoxylin then eosin, unit norm, OD space.
    max_concentrations : numpy.ndarray or None
        The target's ``percentile`` of each stain's concentration, shape (2,).
    """

    #: Transmitted light intensity in the OD conversion.
    io: float = 256.0
    #: A stain whose source percentile concentration is below this is treated as absent.
    min_concentration: ClassVar[float] = 1e-2

    def __init__(
        self, *, percentile: float = 99.0, n_samples: int = 4096, seed: int = 0, **base: Any
    ) -> None:
        super().__init__(**base)
        if not 0.0 < float(percentile) <= 100.0:
            raise StainError(f"percentile must be in (0, 100], got {percentile}")
        if int(n_samples) < MIN_TISSUE_PIXELS:
            raise StainError(f"n_samples must be at least {MIN_TISSUE_PIXELS}, got {n_samples}")
        self.percentile = float(percentile)
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.stain_matrix: np.ndarray | None = None
        self.max_concentrations: np.ndarray | None = None

    # hooks -------------------------------------------------------------
    def _stain_mask(self, xp: Ops, od: Any, tissue: Any) -> Any:
        """Pixels used to estimate the stain matrix (default: tissue)."""
        return tissue

    @abstractmethod
    def _stain_matrices(self, xp: Ops, od: Any, valid: Any) -> Any:
        """(N, 2, 3) unit-norm stain matrices (H first) from planar OD samples (N, 3, S)."""

    @abstractmethod
    def _concentrations(self, xp: Ops, od: Any, stains: Any) -> Any:
        """Planar concentrations (N, 2, M) of planar OD (N, 3, M) on stains (N, 2, 3)."""

    # machinery ----------------------------------------------------------
    def get_options(self) -> dict[str, Any]:
        return {
            **super().get_options(),
            "percentile": self.percentile,
            "n_samples": self.n_samples,
            "seed": self.seed,
        }

    @property
    def is_fitted(self) -> bool:
        return self.stain_matrix is not None

    def _analyse(self, xp: Ops, rgb: Any, tissue: Any, n: int) -> tuple[Any, Any, Any, Any]:
        """OD of all pixels, and a seeded sample of the pixels used for stain estimation."""
        od = _ops.rgb_to_od(xp, rgb, self.io)
        index, valid = _ops.sample_pixels(xp, self._stain_mask(xp, od, tissue), n, self.seed)
        return od, index, valid, _ops.gather_pixels(xp, od, index)

    def _fallback(self, xp: Ops, stains: Any, ok: Any) -> tuple[Any, Any]:
        """Replace unusable stain matrices by a harmless default (their images are skipped)."""
        ok = ok & xp.isfinite(stains).all(2).all(1)
        return xp.where(ok[:, None, None], stains, xp.asarray(RUIFROK_HE)[None]), ok

    def _fit(self, batches: list[Any], xp: Ops) -> None:
        per_image = max(math.ceil(self.n_samples / sum(b.shape[0] for b in batches)), 256)
        samples, valids, everything = [], [], []
        for rgb in batches:
            tissue = _ops.tissue_mask(xp, rgb, self.luminosity_threshold)
            od, _, valid, sample = self._analyse(xp, rgb, tissue, min(per_image, self.n_samples))
            samples.append(xp.concat(list(sample), axis=1)[None])
            valids.append(valid.reshape(1, -1))
            if not self.preserve_background:
                everything.append(xp.concat(list(od), axis=1)[None])
        sample, valid = xp.concat(samples, axis=2), xp.concat(valids, axis=1)
        if not bool(usable(xp, sample, valid)[0]):
            raise StainError(
                f"{self.method}: the target images hold too little tissue, or a single colour"
            )
        stains = self._stain_matrices(xp, sample, valid)
        if self.preserve_background:
            conc = self._concentrations(xp, sample, stains)
            max_conc = _ops.masked_percentile(xp, conc, valid, self.percentile)
        else:
            conc = self._concentrations(xp, xp.concat(everything, axis=2), stains)
            max_conc = xp.percentile_all(conc, self.percentile, axis=2)
        stains, max_conc = xp.to_numpy(stains)[0], xp.to_numpy(max_conc)[0]
        if not np.all(np.isfinite(stains)) or not np.all(max_conc > self.min_concentration):
            raise StainError(f"{self.method}: could not separate two stains in the target images")
        self.stain_matrix = stains.astype(np.float64)
        self.max_concentrations = max_conc.astype(np.float64)

    def _transform(self, rgb: Any, tissue: Any, xp: Ops) -> tuple[Any, Any]:
        assert self.stain_matrix is not None  # transform() checks is_fitted first
        od, index, valid, sample = self._analyse(xp, rgb, tissue, self.n_samples)
        ok = usable(xp, sample, valid)
        stains, ok = self._fallback(xp, self._stain_matrices(xp, sample, valid), ok)
        conc = self._concentrations(xp, od, stains)
        if self.preserve_background:  # percentile over the sampled stained pixels
            picked = _ops.gather_pixels(xp, conc, index)
            source = _ops.masked_percentile(xp, picked, valid, self.percentile)
        else:
            source = xp.percentile_all(conc, self.percentile, axis=2)
        ok = ok & (source > self.min_concentration).all(1)
        scale = xp.asarray(self.max_concentrations)[None] / xp.clip(source, self.min_concentration)
        scale = xp.where(ok[:, None], scale, xp.full(scale.shape, 1.0))
        new_od = _ops.combine(xp, conc * scale[:, :, None], xp.asarray(self.stain_matrix.T))
        return _ops.od_to_rgb(xp, new_od, self.io), ok

    def extract(self, images: Any) -> np.ndarray:
        """Stain matrix of each image: (2, 3) for one image, (N, 2, 3) for a batch."""
        batch, _ = _backend.as_batch(images, device=self.device)
        xp = _backend.ops_for(batch)
        rgb = batch.reshape(batch.shape[0], -1, 3)
        with np.errstate(all="ignore"):
            tissue = _ops.tissue_mask(xp, rgb, self.luminosity_threshold)
            _, _, valid, sample = self._analyse(xp, rgb, tissue, self.n_samples)
            ok = xp.to_numpy(usable(xp, sample, valid))
            stains = xp.to_numpy(self._stain_matrices(xp, sample, valid)).astype(np.float64)
        bad = np.flatnonzero(~ok | ~np.isfinite(stains).all(axis=(1, 2)))
        if bad.size:
            raise StainError(
                f"{self.method}: no stain matrix for image(s) {bad.tolist()}: "
                "too little tissue, or a single colour"
            )
        return stains[0] if images.ndim == 3 else stains

    def _target_to_dict(self) -> dict[str, Any]:
        assert self.stain_matrix is not None and self.max_concentrations is not None
        return {
            "stain_matrix": self.stain_matrix.tolist(),
            "max_concentrations": self.max_concentrations.tolist(),
        }

    def _target_from_dict(self, target: dict[str, Any]) -> None:
        stains = target_array(target.get("stain_matrix"), (2, 3), "stain_matrix")
        max_conc = target_array(target.get("max_concentrations"), (2,), "max_concentrations")
        if np.any(max_conc <= 0):
            raise StainError("stain target 'max_concentrations' must be positive")
        self.stain_matrix, self.max_concentrations = stains, max_conc
