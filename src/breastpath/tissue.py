"""What counts as tissue: the one definition, used by stain, inference, serve and slide.

Rule
----
A pixel is **tissue** when its luminosity (CIE L* / 100 of the sRGB pixel, D65) is below
``max_luminosity`` (0.8 by default, the staintools convention) and at or above
``min_luminosity`` (0 by default: black counts; the quality gate raises it to tell a black
frame from tissue). Everything brighter is background: glass, fat, white padding. Callers may
choose other thresholds; the code that applies them is this module's.

Luminosity is computed through lookup tables in linear light (relative luminance ``Y``) and the
threshold is converted once (:func:`luminance_threshold`), so the test is a table lookup, three
additions and one comparison per pixel. The same tables drive the numpy and torch stain code
(:mod:`breastpath.stain._ops`).

Optical density (OD) is ``log(io) - log(I + 1)`` per channel; with the default ``io = 256``
white (255) has OD 0.

Examples
--------
>>> import numpy as np
>>> glass = np.full((50, 50, 3), (241, 235, 238), np.uint8)
>>> tissue_fraction(glass)
0.0
>>> pink = np.full((50, 50, 3), (200, 120, 170), np.uint8)
>>> tissue_fraction(pink), is_background(pink)
(1.0, False)
"""

from __future__ import annotations

import functools
import math

import numpy as np

from breastpath.errors import InvalidImageError

#: Tissue is luminosity (CIE L* / 100) below this, by default (staintools' convention).
MAX_LUMINOSITY = 0.8
#: An image or tile is background when less than this share of its pixels is tissue, by default.
MIN_TISSUE_FRACTION = 0.1

#: sRGB (D65) linear RGB -> XYZ, the matrix torchstain and OpenCV use.
RGB_TO_XYZ = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)


# --------------------------------------------------------------------------- lookup tables
@functools.lru_cache(maxsize=8)
def od_table(io: float = 256.0) -> np.ndarray:
    """OD of each uint8 level: ``log(io) - log(v + 1)`` as float32, shape (256,)."""
    return (math.log(io) - np.log(np.arange(256, dtype=np.float64) + 1.0)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def linear_table() -> np.ndarray:
    """sRGB uint8 level -> linear light in [0, 1], float64, shape (256,)."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)


@functools.lru_cache(maxsize=1)
def luminance_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel tables whose sum is the relative luminance Y of a pixel (float64)."""
    lin = linear_table()
    return tuple(lin * w for w in RGB_TO_XYZ[1])


def luminance_threshold(luminosity: float) -> float:
    """The relative luminance Y at which CIE L* / 100 equals ``luminosity``.

    Examples
    --------
    >>> round(luminance_threshold(0.8), 4), luminance_threshold(0.0)
    (0.5668, 0.0)
    """
    f = (100.0 * luminosity + 16.0) / 116.0
    return f**3 if f > 6.0 / 29.0 else (f - 16.0 / 116.0) / 7.787


# --------------------------------------------------------------------------- pixels
def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise InvalidImageError(f"expected uint8 RGB pixels (..., 3), got {rgb.shape} {rgb.dtype}")
    return rgb


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance Y in [0, 1] (float32) of uint8 sRGB pixels ``(..., 3)``."""
    rgb = _check_rgb(rgb)
    tr, tg, tb = (t.astype(np.float32) for t in luminance_tables())
    return tr[rgb[..., 0]] + tg[rgb[..., 1]] + tb[rgb[..., 2]]


def optical_density(rgb: np.ndarray, *, io: float = 256.0) -> np.ndarray:
    """Optical density ``(..., 3)`` float32 of uint8 pixels: ``log(io) - log(I + 1)``.

    Examples
    --------
    >>> [round(float(v), 2) for v in optical_density(np.array([255, 0, 127], np.uint8))]
    [0.0, 5.55, 0.69]
    """
    return od_table(float(io))[_check_rgb(rgb)]


def tissue_pixels(
    rgb: np.ndarray,
    *,
    max_luminosity: float = MAX_LUMINOSITY,
    min_luminosity: float = 0.0,
) -> np.ndarray:
    """Bool mask ``(...)``: pixels whose luminosity is in ``[min_luminosity, max_luminosity)``.

    Parameters
    ----------
    rgb
        uint8 RGB pixels, channels last, any leading shape.
    max_luminosity
        Pixels at or above this luminosity (CIE L* / 100) are background.
    min_luminosity
        Pixels below this are not tissue either (0 keeps black; see the module docstring).
    """
    y = luminance(rgb)
    mask = y < luminance_threshold(max_luminosity)
    if min_luminosity > 0.0:
        mask &= y >= luminance_threshold(min_luminosity)
    return mask


def tissue_fraction(
    rgb: np.ndarray,
    *,
    max_luminosity: float = MAX_LUMINOSITY,
    min_luminosity: float = 0.0,
) -> float | np.ndarray:
    """Share of tissue pixels of an image ``(H, W, 3)`` (a float) or a batch ``(N, H, W, 3)``
    (an ``(N,)`` array); an empty image has no tissue."""
    rgb = _check_rgb(rgb)
    if rgb.ndim not in (3, 4):
        raise InvalidImageError(f"expected (H, W, 3) or (N, H, W, 3) pixels, got {rgb.shape}")
    mask = tissue_pixels(rgb, max_luminosity=max_luminosity, min_luminosity=min_luminosity)
    axes = (-2, -1)
    if mask.shape[-2] * mask.shape[-1] == 0:
        empty = np.zeros(mask.shape[:-2])
        return float(empty) if rgb.ndim == 3 else empty
    fraction = mask.mean(axis=axes, dtype=np.float64)
    return float(fraction) if rgb.ndim == 3 else fraction


def is_background(
    rgb: np.ndarray,
    *,
    max_luminosity: float = MAX_LUMINOSITY,
    min_fraction: float = MIN_TISSUE_FRACTION,
) -> bool | np.ndarray:
    """Whether an image (or each image of a batch) holds less than ``min_fraction`` tissue."""
    fraction = tissue_fraction(rgb, max_luminosity=max_luminosity)
    if isinstance(fraction, float):
        return bool(fraction < min_fraction)
    return fraction < min_fraction
