"""The :class:`StainNormalizer` interface: fit a target, transform images, save and load the target.

Normalizers accept one ``(H, W, 3)`` uint8 image, an ``(N, H, W, 3)`` batch, or a list of either,
as numpy arrays or torch tensors, and give back the same type, shape, dtype and device. Near-white
background is left as it is; images without enough tissue, or of a single colour, come back
unchanged with a :class:`StainWarning` (and ``False`` in the status from
``transform(..., return_status=True)``), never with NaN.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from breastpath.errors import StainError
from breastpath.stain import _backend, _ops
from breastpath.stain._backend import Ops
from breastpath.stain._coding import RUIFROK_HE

#: Images with fewer tissue pixels than this are left unchanged.
MIN_TISSUE_PIXELS = 16
#: Name written into :meth:`StainNormalizer.to_dict` output.
FORMAT = "breastpath.stain"
FORMAT_VERSION = 1
#: Pixels processed at once: about one 448x448 tile on the CPU (stays in cache), 16M on an
#: accelerator (bounds memory).
_CHUNK_PIXELS = {"cpu": 1 << 18, "accelerator": 1 << 24}


class StainWarning(UserWarning):
    """Some images were left unchanged (no tissue, too few tissue pixels, or a single colour)."""


def _as_float_list(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise StainError(f"stain target {name!r} is not numeric") from None
    if array.shape != shape or not np.all(np.isfinite(array)):
        raise StainError(f"stain target {name!r} must be finite with shape {shape}")
    return array


class StainNormalizer(ABC):
    """Base class: ``fit(target_images)`` then ``transform(images)``.

    Parameters
    ----------
    luminosity_threshold
        Tissue is where CIE L*/100 is below this (0.8, as staintools): only tissue pixels are
        used to fit stains and statistics.
    preserve_background
        Leave near-white background as it is: pixels with luminosity at or above
        ``background_luminosity`` come back unchanged, pixels between the two thresholds are
        blended linearly from normalized to unchanged (no seam at the tissue edge), and
        statistics are computed on tissue only. ``False`` reproduces the reference
        implementations, which transform and count every pixel.
    background_luminosity
        Luminosity from which pixels are background that is kept exactly (0.95).
    device
        Where to compute. ``None``: numpy arrays and CPU tensors use the numpy backend, tensors
        on an accelerator stay there (torch). A device (``"cuda"``, ``"cuda:1"``, or ``"cpu"`` to
        force torch on the CPU) runs torch there for any input; results come back in the
        input's type and device. Not saved by :meth:`to_dict`.
    """

    method: ClassVar[str] = ""

    def __init__(
        self,
        *,
        luminosity_threshold: float = 0.8,
        preserve_background: bool = True,
        background_luminosity: float = 0.95,
        device: Any = None,
    ) -> None:
        if not 0.0 < float(luminosity_threshold) <= 1.0:
            raise StainError(f"luminosity_threshold must be in (0, 1], got {luminosity_threshold}")
        if not float(luminosity_threshold) <= float(background_luminosity) <= 1.0:
            raise StainError(
                "background_luminosity must be in [luminosity_threshold, 1], "
                f"got {background_luminosity}"
            )
        self.luminosity_threshold = float(luminosity_threshold)
        self.preserve_background = bool(preserve_background)
        self.background_luminosity = float(background_luminosity)
        self.device = device

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def _fit(self, batches: list[Any], xp: Ops) -> None:
        """Fit the target on flattened uint8 batches ``(N, P, 3)`` (all on one backend)."""

    @abstractmethod
    def _transform(self, rgb: Any, tissue: Any, xp: Ops) -> tuple[Any, Any]:
        """Normalize ``rgb`` (N, P, 3) uint8; return ``(new uint8 (N, P, 3), ok bool (N,))``."""

    @abstractmethod
    def _target_to_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def _target_from_dict(self, target: dict[str, Any]) -> None: ...

    @property
    @abstractmethod
    def is_fitted(self) -> bool:
        """Whether a target has been fitted or loaded."""

    # ------------------------------------------------------------------ public API
    def get_options(self) -> dict[str, Any]:
        """The constructor options (JSON-able; the runtime ``device`` is not included)."""
        return {
            "luminosity_threshold": self.luminosity_threshold,
            "preserve_background": self.preserve_background,
            "background_luminosity": self.background_luminosity,
        }

    def fit(self, target_images: Any) -> StainNormalizer:
        """Fit the target appearance on one image, a batch, or a list of images.

        Several images are pooled into one target (fit on a representative sample of training
        images). Raises :class:`~breastpath.errors.StainError` when the images hold no usable
        tissue. Returns ``self``.
        """
        batches = []
        for item in _backend.split_images(target_images):
            batch, _ = _backend.as_batch(item, device=self.device)
            if batch.shape[0]:
                batches.append(batch.reshape(batch.shape[0], -1, 3))
        if not batches:
            raise StainError(f"cannot fit the {self.method} normalizer on no images")
        xp = _backend.ops_for(batches[0])
        with np.errstate(all="ignore"):
            self._fit(batches, xp)
        return self

    def transform(self, images: Any, *, return_status: bool = False) -> Any:
        """Normalize one image, a batch, or a list of images to the fitted target.

        Parameters
        ----------
        images
            ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8, numpy or torch (any device), or a list.
        return_status
            Also return whether each image was normalized (``False``: left unchanged).

        Returns
        -------
        The normalized images in the input's type, shape, dtype and device; with
        ``return_status``, a tuple ``(images, status)`` where ``status`` is a bool for one image,
        a bool array ``(N,)`` for a batch, or a list for a list.
        """
        if not self.is_fitted:
            raise StainError(f"the {self.method} normalizer has no target: call fit() first")
        if isinstance(images, (list, tuple)):
            pairs = [self._transform_any(item) for item in images]
            outputs, statuses = [p[0] for p in pairs], [p[1] for p in pairs]
            flat = np.concatenate([np.atleast_1d(s) for s in statuses]) if statuses else []
        else:
            outputs, statuses = self._transform_any(images)
            flat = np.atleast_1d(statuses)
        skipped = int(np.size(flat) - np.count_nonzero(flat))
        if skipped:
            warnings.warn(
                f"{self.method}: {skipped} of {np.size(flat)} image(s) left unchanged "
                "(no tissue, too few tissue pixels, or a single colour)",
                StainWarning,
                stacklevel=2,
            )
        return (outputs, statuses) if return_status else outputs

    __call__ = transform

    def to_dict(self) -> dict[str, Any]:
        """The fitted target and options as plain JSON-able data (for a checkpoint or a file)."""
        if not self.is_fitted:
            raise StainError(f"the {self.method} normalizer has no target to save")
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "method": self.method,
            "options": self.get_options(),
            "target": self._target_to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, device: Any = None) -> StainNormalizer:
        """Rebuild a fitted normalizer from :meth:`to_dict` output.

        Examples
        --------
        >>> import numpy as np
        >>> from breastpath.stain import StainNormalizer, get_normalizer
        >>> image = np.random.default_rng(0).integers(60, 220, (64, 64, 3), dtype=np.uint8)
        >>> saved = get_normalizer("reinhard").fit(image).to_dict()
        >>> StainNormalizer.from_dict(saved).method
        'reinhard'
        """
        from breastpath.stain import get_normalizer

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StainError(f"not a stain normalizer description (expected format {FORMAT!r})")
        if data.get("version") != FORMAT_VERSION:
            raise StainError(f"unsupported stain normalizer version {data.get('version')!r}")
        method = data.get("method")
        if cls.method and method != cls.method:
            raise StainError(f"description is for {method!r}, not {cls.method!r}")
        options = data.get("options") or {}
        if not isinstance(options, dict) or not isinstance(data.get("target"), dict):
            raise StainError("stain normalizer description needs 'options' and 'target' objects")
        try:
            normalizer = get_normalizer(str(method), **options, device=device)
        except TypeError as exc:
            raise StainError(f"bad options for {method!r}: {exc}") from None
        normalizer._target_from_dict(data["target"])
        return normalizer

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_options().items())
        return f"{type(self).__name__}({options}, fitted={self.is_fitted})"

    # ------------------------------------------------------------------ internals
    def _transform_any(self, images: Any) -> tuple[Any, Any]:
        batch, restore = _backend.as_batch(images, device=self.device)
        n, height, width = batch.shape[:3]
        xp = _backend.ops_for(batch)
        flat = batch.reshape(n, height * width, 3)
        budget = _CHUNK_PIXELS[
            "cpu" if xp.device is None or xp.device.type == "cpu" else "accelerator"
        ]
        step = max(1, budget // max(1, height * width))
        outputs, status = [], []
        with np.errstate(all="ignore"):
            for start in range(0, n, step):
                part = flat[start : start + step]
                lum = _ops.luminance(xp, part)
                tissue = lum < _ops.luminance_threshold(self.luminosity_threshold)
                new, ok = self._transform(part, tissue, xp)
                if self.preserve_background:
                    low, high = self.luminosity_threshold, self.background_luminosity
                    new = _ops.keep_background(xp, new, part, lum, low, high)
                outputs.append(xp.where(ok[:, None, None], new, part))
                status.append(xp.to_numpy(ok))
        out = (xp.concat(outputs) if len(outputs) > 1 else outputs[0]) if n else flat
        flags = np.concatenate(status).astype(bool) if status else np.zeros(0, bool)
        result = restore(out.reshape(batch.shape))
        return result, (bool(flags[0]) if images.ndim == 3 else flags)


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
        stains = _as_float_list(target.get("stain_matrix"), (2, 3), "stain_matrix")
        max_conc = _as_float_list(target.get("max_concentrations"), (2,), "max_concentrations")
        if np.any(max_conc <= 0):
            raise StainError("stain target 'max_concentrations' must be positive")
        self.stain_matrix, self.max_concentrations = stains, max_conc
