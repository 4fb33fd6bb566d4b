"""Pixel operations shared by the stain code: optical density, tissue mask, colour conversions,
pixel sampling and percentiles, for numpy and torch through :mod:`breastpath.stain._backend`.

Conventions
-----------
* Images are ``uint8`` RGB, channels last. Internally a batch is flattened to ``(N, P, 3)``.
* Optical density (OD) is ``log(io) - log(I + 1)``; with the default ``io = 256`` white (255) has
  OD 0 and the conversion is exactly invertible: ``I = io * exp(-OD) - 1``.
* Luminosity is CIE L* / 100 of the sRGB pixel (D65); tissue is luminosity below a threshold
  (0.8 by default, as in staintools), the rule of :mod:`breastpath.tissue` applied through the
  backend. Near-white background is everything else.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from breastpath.stain._backend import Ops
from breastpath.tissue import (
    RGB_TO_XYZ,
    linear_table,
    luminance_tables,
    luminance_threshold,
    od_table,
)

XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


# --------------------------------------------------------------------------- lookup tables
# The tables and the tissue threshold come from :mod:`breastpath.tissue`, the one definition of
# tissue: the stain code applies them through a backend (numpy or torch) instead of numpy only.


@functools.lru_cache(maxsize=8)
def pixel_order(n_pixels: int, seed: int) -> np.ndarray:
    """A seeded pseudo-random permutation of ``range(n_pixels)`` (cached).

    Keys come from an integer hash of the pixel index, so the order depends only on the image
    size and the seed: an image gets the same pixel sample alone or inside any batch, on numpy or
    on torch.
    """
    mask = np.uint64(0xFFFFFFFF)

    def mix(x: np.ndarray) -> np.ndarray:  # lowbias32, a bijection on 32-bit integers
        x = x & mask
        x ^= x >> np.uint64(16)
        x = (x * np.uint64(0x7FEB352D)) & mask
        x ^= x >> np.uint64(15)
        x = (x * np.uint64(0x846CA68B)) & mask
        x ^= x >> np.uint64(16)
        return x

    salt = mix(np.array([seed & 0xFFFFFFFF], dtype=np.uint64))[0]
    keys = mix(np.arange(n_pixels, dtype=np.uint64) ^ salt)
    return np.argsort(keys, kind="stable").astype(np.int64)


# --------------------------------------------------------------------------- pixel math
# Float pixel data is kept planar, (N, C, P): per-channel arithmetic then runs on contiguous
# planes with plain element-wise operations (no BLAS calls, which stall on a busy CPU).


def luminance(xp: Ops, rgb: Any) -> Any:
    """Relative luminance Y ``(N, P)`` float32 of uint8 sRGB pixels ``(N, P, 3)``."""
    tr, tg, tb = luminance_tables()
    return xp.lut(tr, rgb[..., 0]) + xp.lut(tg, rgb[..., 1]) + xp.lut(tb, rgb[..., 2])


def tissue_mask(xp: Ops, rgb: Any, threshold: float) -> Any:
    """``(N, P)`` bool: luminosity (CIE L* / 100) below ``threshold``, for uint8 ``(N, P, 3)``
    (:func:`breastpath.tissue.tissue_pixels` on the backend)."""
    return luminance(xp, rgb) < luminance_threshold(threshold)


def keep_background(xp: Ops, new: Any, old: Any, lum: Any, low: float, high: float) -> Any:
    """Blend uint8 ``new`` back to ``old`` where the luminosity is high.

    Pixels with luminosity (CIE L* / 100) below ``low`` take ``new``, pixels at or above ``high``
    keep ``old`` exactly, and pixels in between are mixed linearly in luminance, so that no seam
    appears where tissue fades into background.
    """
    y_low, y_high = luminance_threshold(low), luminance_threshold(high)
    if y_high <= y_low:
        return xp.where((lum < y_low)[..., None], new, old)
    weight = xp.clip((y_high - lum) / (y_high - y_low), 0.0, 1.0)[..., None]
    old_f = xp.float(old)
    return xp.to_uint8(old_f + (xp.float(new) - old_f) * weight)


def rgb_to_od(xp: Ops, rgb: Any, io: float = 256.0) -> Any:
    """Planar optical density ``(N, 3, P)`` float32, ``log(io) - log(I + 1)``, of uint8 pixels."""
    table = od_table(float(io))
    return xp.stack([xp.lut(table, rgb[..., c]) for c in range(3)], axis=1)


def od_to_rgb(xp: Ops, od: Any, io: float = 256.0) -> Any:
    """Inverse of :func:`rgb_to_od`: planar OD -> uint8 ``(N, P, 3)``, rounded and clipped."""
    return xp.stack([xp.to_uint8(io * xp.exp(-od[:, c]) - 1.0) for c in range(3)], axis=-1)


def combine(xp: Ops, planes: Any, weights: Any) -> Any:
    """``planes`` (N, K, P) times ``weights`` (N, J, K) or (J, K) -> (N, J, P), element-wise."""
    if weights.ndim == 2:
        weights = weights[None]
    rows = []
    for j in range(weights.shape[1]):
        acc = planes[:, 0] * weights[:, j, 0, None]
        for k in range(1, planes.shape[1]):
            acc = acc + planes[:, k] * weights[:, j, k, None]
        rows.append(acc)
    return xp.stack(rows, axis=1)


def second_moments(xp: Ops, planes: Any) -> Any:
    """``sum_p x x^T`` of planar ``(N, K, P)`` data -> ``(N, K, K)``, element-wise."""
    k = planes.shape[1]
    entries = {}
    for i in range(k):
        for j in range(i, k):
            entries[i, j] = entries[j, i] = (planes[:, i] * planes[:, j]).sum(1)
    return xp.stack([xp.stack([entries[i, j] for j in range(k)], axis=1) for i in range(k)], 1)


def rgb_to_lab(xp: Ops, rgb: Any) -> Any:
    """Planar CIE L*a*b* ``(N, 3, P)`` (D65; L in [0, 100]) of uint8 sRGB ``(N, P, 3)``."""
    lin = xp.stack([xp.lut(linear_table(), rgb[..., c]) for c in range(3)], axis=1)
    xyz = combine(xp, lin, xp.asarray(RGB_TO_XYZ / WHITE_D65[:, None]))
    f = xp.where(xyz > 0.008856, xp.cbrt(xp.clip(xyz, 0.0)), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
    return xp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=1)


def lab_to_rgb(xp: Ops, lab: Any) -> Any:
    """Inverse of :func:`rgb_to_lab`: planar L*a*b* -> uint8 ``(N, P, 3)`` (rounded, clipped)."""
    fy = (lab[:, 0] + 16.0) / 116.0
    f = xp.stack([fy + lab[:, 1] / 500.0, fy, fy - lab[:, 2] / 200.0], axis=1)
    xyz = xp.where(f > 0.2068966, f * f * f, (f - 16.0 / 116.0) / 7.787)
    lin = xp.clip(combine(xp, xyz, xp.asarray(XYZ_TO_RGB * WHITE_D65[None, :])), 0.0, 1.0)
    srgb = xp.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    return xp.stack([xp.to_uint8(255.0 * srgb[:, c]) for c in range(3)], axis=-1)


def sample_pixels(xp: Ops, mask: Any, n: int, seed: int) -> tuple[Any, Any]:
    """Pick up to ``n`` pixels where ``mask`` (N, P) is true, uniformly at random per image.

    Returns ``(index, valid)``, both ``(N, min(n, P))``: pixel indices and whether each slot holds
    a masked pixel (images with fewer masked pixels are padded with invalid slots). The choice
    follows :func:`pixel_order`, so it is deterministic for a seed and batch-independent.
    """
    count, n_pixels = mask.shape
    n = min(n, n_pixels)
    order = xp.from_numpy(pixel_order(n_pixels, seed))
    ordered = mask[:, order]
    rank = xp.cumsum(ordered, axis=1)
    take = ordered & (rank <= n)
    rows, cols = xp.nonzero(take)
    slots = rank[rows, cols] - 1
    index = xp.zeros((count, n), dtype="int")
    valid = xp.zeros((count, n), dtype="bool")
    index[rows, slots] = order[cols]
    valid[rows, slots] = True
    return index, valid


def gather_pixels(xp: Ops, planes: Any, index: Any) -> Any:
    """Planar ``(N, C, P)`` at ``index`` (N, S) -> ``(N, C, S)``."""
    return xp.take_along(planes, index[:, None, :], axis=2)


def masked_percentile(xp: Ops, values: Any, valid: Any, q: float) -> Any:
    """Per-row ``q``-th percentile (linear, as numpy) of planar ``values`` (N, K, S) where
    ``valid`` (N, S); rows without a valid entry give 0. Returns ``(N, K)``."""
    inf = xp.full(values.shape, float("inf"))
    ordered = xp.sort(xp.where(valid[:, None, :], values, inf), axis=2)
    last = xp.clip(xp.int(valid.sum(1)) - 1, 0)
    pos = (q / 100.0) * xp.float(last)
    lo = xp.floor(pos)
    frac = (pos - lo)[:, None]
    lo_i = xp.int(lo)
    hi_i = xp.minimum(lo_i + 1, last)
    a = xp.take_along(ordered, lo_i[:, None, None], axis=2)[..., 0]
    b = xp.take_along(ordered, hi_i[:, None, None], axis=2)[..., 0]
    out = a + (b - a) * frac
    return xp.where((valid.sum(1) > 0)[:, None], out, xp.zeros(tuple(out.shape)))
