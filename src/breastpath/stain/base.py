"""The :class:`StainNormalizer` interface: fit a target, transform images, save and load the target.

Normalizers accept one ``(H, W, 3)`` uint8 image, an ``(N, H, W, 3)`` batch, or a list of either,
as numpy arrays or torch tensors, and give back the same type, shape, dtype and device. Near-white
background is left as it is; images without enough tissue, or of a single colour, come back
unchanged with a :class:`StainWarning` (and ``False`` in the status from
``transform(..., return_status=True)``), never with NaN.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from breastpath.errors import StainError
from breastpath.stain import _backend, _ops
from breastpath.stain._backend import Ops

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


def target_array(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A stored target value as a finite float64 array of ``shape``, or a StainError."""
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
            flat: np.ndarray | list[bool] = (
                np.concatenate([np.atleast_1d(s) for s in statuses]) if statuses else []
            )
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
