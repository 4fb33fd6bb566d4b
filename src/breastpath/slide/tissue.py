"""Find tissue on a low-resolution view of a slide, so that background is never scored.

Rule: a thumbnail pixel is tissue when its HSV saturation (``method="saturation"``, the default)
or its mean optical density (``method="od"``) is above an Otsu threshold, clipped to a range per
method (:data:`THRESHOLD_RANGE`): the floor keeps a blank slide free of tissue, the cap keeps
pale tissue when dark tumour would pull Otsu up between the two. The mask is then cleaned:
closing and opening with a square of side ``2 * radius + 1``, and connected pieces smaller than
``min_area`` pixels dropped. **Holes are not filled**, and the closing may only add pixels that
are not bright (luminosity CIE L*/100 below 0.8): a lumen, a tear or glass inside the section
stays out of the mask, so it is never scored as tissue. Each tile is checked again on its own
pixels before scoring (:class:`breastpath.inference.tiles.TileCheck`). Morphology uses
``scipy.ndimage`` (installed with scikit-learn); without scipy a numpy closing and opening run
and small pieces are kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from breastpath.errors import SlideError

if TYPE_CHECKING:
    from breastpath.slide.reader import SlideReader

METHODS = ("saturation", "od")
#: Range the Otsu threshold is clipped to, per method: saturation in [0, 1]; mean optical
#: density (natural log; white glass is about 0.05, pale stroma about 0.25).
THRESHOLD_RANGE = {"saturation": (0.07, 0.2), "od": (0.08, 0.2)}


@dataclass(frozen=True)
class TissueMask:
    """A tissue mask on a thumbnail grid.

    ``scale = (sx, sy)`` is the number of level-0 pixels per mask pixel along x and y.
    """

    mask: np.ndarray
    scale: tuple[float, float]
    threshold: float
    method: str
    thumbnail: np.ndarray

    @property
    def fraction(self) -> float:
        """Share of the thumbnail that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @functools.cached_property
    def _summed_area(self) -> np.ndarray:
        height, width = self.mask.shape
        kind = np.int32 if self.mask.size < 2**31 else np.int64
        table = np.zeros((height + 1, width + 1), dtype=kind)
        table[1:, 1:] = self.mask.astype(kind).cumsum(0, dtype=kind).cumsum(1, dtype=kind)
        return table

    def region_fraction(
        self, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray
    ) -> np.ndarray:
        """Tissue share of level-0 boxes ``[x0, x1) x [y0, y1)`` (vectorised, summed-area table).

        A box smaller than one mask pixel takes the value of the pixel holding its centre.
        """
        height, width = self.mask.shape
        table = self._summed_area
        sx, sy = self.scale
        cx = np.clip(((np.asarray(x0) + np.asarray(x1)) / 2 / sx).astype(np.int64), 0, width - 1)
        cy = np.clip(((np.asarray(y0) + np.asarray(y1)) / 2 / sy).astype(np.int64), 0, height - 1)
        a = np.clip(np.floor(np.asarray(x0) / sx).astype(np.int64), 0, width)
        b = np.clip(np.ceil(np.asarray(x1) / sx).astype(np.int64), 0, width)
        c = np.clip(np.floor(np.asarray(y0) / sy).astype(np.int64), 0, height)
        d = np.clip(np.ceil(np.asarray(y1) / sy).astype(np.int64), 0, height)
        a, b = np.minimum(a, cx), np.maximum(b, cx + 1)
        c, d = np.minimum(c, cy), np.maximum(d, cy + 1)
        inside = table[d, b] - table[c, b] - table[d, a] + table[c, a]
        return inside / ((b - a) * (d - c))


def otsu_threshold(values: np.ndarray, *, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximises the between-class variance of a histogram).

    Examples
    --------
    >>> import numpy as np
    >>> round(otsu_threshold(np.r_[np.zeros(100), np.ones(50)]), 1)
    0.5
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise SlideError("cannot threshold an empty image")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return hi
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(counts)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * centers)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[int(best[len(best) // 2]) + 1])  # the middle of a flat optimum


def tissue_signal(rgb: np.ndarray, *, method: str = "saturation") -> np.ndarray:
    """Per-pixel tissue evidence: HSV saturation in [0, 1], or mean optical density."""
    if method not in METHODS:
        raise SlideError(f"unknown tissue method {method!r}; choose one of {', '.join(METHODS)}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SlideError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    if method == "od":
        from breastpath.tissue import optical_density

        return optical_density(rgb).mean(axis=2)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]  # (elementwise: many times
    high = np.maximum(np.maximum(red, green), blue).astype(np.float32)  # faster than a
    low = np.minimum(np.minimum(red, green), blue).astype(np.float32)  # max over axis 2)
    return np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0).astype(np.float32)


def tissue_mask(
    rgb: np.ndarray,
    *,
    method: str = "saturation",
    threshold: float | None = None,
    radius: int = 2,
    min_area: int = 16,
) -> tuple[np.ndarray, float]:
    """Tissue mask of a low-resolution RGB image.

    Parameters
    ----------
    rgb
        ``(H, W, 3)`` uint8 thumbnail.
    method
        ``"saturation"`` (HSV S) or ``"od"`` (mean optical density).
    threshold
        Fixed threshold; default Otsu, clipped to :data:`THRESHOLD_RANGE`.
    radius
        Closing/opening square half-side in pixels (0 turns morphology off).
    min_area
        Drop connected tissue pieces smaller than this many pixels.

    Returns
    -------
    (mask, threshold)
        Bool ``(H, W)`` mask and the threshold used.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.full((64, 64, 3), 245, np.uint8); rgb[16:48, 16:48] = (200, 120, 170)
    >>> mask, t = tissue_mask(rgb)
    >>> int(mask.sum())
    1024
    """
    signal = tissue_signal(rgb, method=method)
    if threshold is None:
        low, high = THRESHOLD_RANGE[method]
        threshold = min(max(otsu_threshold(signal), low), high)
    raw = signal > threshold
    cleaned = clean_mask(raw, radius=radius, min_area=min_area)
    return cleaned & (raw | ~bright_pixels(rgb)), float(threshold)


def bright_pixels(rgb: np.ndarray) -> np.ndarray:
    """Pixels at or above the tissue luminosity limit (glass, lumens, fat)."""
    from breastpath.tissue import MAX_LUMINOSITY, luminance, luminance_threshold

    return luminance(rgb) >= luminance_threshold(MAX_LUMINOSITY)


def clean_mask(mask: np.ndarray, *, radius: int = 2, min_area: int = 16) -> np.ndarray:
    """Close, open and drop small pieces; holes are kept (see the module docstring)."""
    try:
        from scipy import ndimage
    except ImportError:  # pragma: no cover - exercised by a test that hides scipy
        ndimage = None
    if radius > 0:
        if ndimage is None:
            mask = _numpy_opening(_numpy_closing(mask, radius), radius)
        else:
            square = np.ones((2 * radius + 1,) * 2, dtype=bool)
            padded = np.pad(mask, radius + 1)
            closed = ndimage.binary_closing(padded, structure=square)[
                radius + 1 : -radius - 1, radius + 1 : -radius - 1
            ]
            mask = ndimage.binary_opening(closed, structure=square)
    if ndimage is not None and min_area > 1 and mask.any():
        labels, count = ndimage.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        keep = sizes >= min_area
        keep[0] = False
        mask = keep[labels]
    return np.asarray(mask, dtype=bool)


def _shift_reduce(mask: np.ndarray, radius: int, *, grow: bool) -> np.ndarray:
    padded = np.pad(mask, radius, constant_values=not grow)
    height, width = mask.shape
    out = mask.copy()
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            window = padded[dy : dy + height, dx : dx + width]
            out = (out | window) if grow else (out & window)
    return out


def _numpy_closing(mask: np.ndarray, radius: int) -> np.ndarray:
    return _shift_reduce(_shift_reduce(mask, radius, grow=True), radius, grow=False)


def _numpy_opening(mask: np.ndarray, radius: int) -> np.ndarray:
    return _shift_reduce(_shift_reduce(mask, radius, grow=False), radius, grow=True)


def detect_tissue(
    reader: SlideReader,
    *,
    max_size: int = 2048,
    method: str = "saturation",
    threshold: float | None = None,
    radius: int = 2,
    min_area: int = 16,
) -> TissueMask:
    """Tissue mask of a slide from its thumbnail (longest side at most ``max_size``).

    Examples
    --------
    >>> from breastpath.slide.reader import open_slide
    >>> tissue = detect_tissue(open_slide("slide.ome.tif"))  # doctest: +SKIP
    >>> tissue.fraction  # doctest: +SKIP
    0.012
    """
    thumbnail, scale = reader.thumbnail(max_size=max_size)
    mask, used = tissue_mask(
        thumbnail, method=method, threshold=threshold, radius=radius, min_area=min_area
    )
    return TissueMask(mask=mask, scale=scale, threshold=used, method=method, thumbnail=thumbnail)
