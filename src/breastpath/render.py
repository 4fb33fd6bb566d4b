"""Colour maps and overlays: the one renderer for heatmaps (web page, slides, mosaics).

Values in ``[0, 1]`` are mapped through a matplotlib colour map (a 256-entry lookup table,
built once per name) and blended over an RGB image with a weight per pixel; NaN values leave the
image as it is. The page's Grad-CAM and tile pictures (:mod:`breastpath.serve.render`) and the
slide and mosaic heatmaps (:mod:`breastpath.slide.heatmap`) both draw with these functions.

Examples
--------
>>> import numpy as np
>>> base = np.full((2, 2, 3), 200, np.uint8)
>>> out = blend(base, np.array([[0.0, np.nan], [1.0, 0.5]]), alpha=0.5, cmap="gray")
>>> out[..., 0].tolist()
[[100, 200], [228, 164]]
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def colormap_lut(name: str) -> np.ndarray:
    """A ``(256, 3)`` uint8 lookup table for a matplotlib colour map (rounded)."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def lut_index(values: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` (clipped; NaN as 0) -> uint8 lookup-table indices."""
    return np.round(np.clip(np.nan_to_num(values), 0.0, 1.0) * 255).astype(np.uint8)


def colorize(values: np.ndarray, *, cmap: str) -> np.ndarray:
    """Values in ``[0, 1]``, any shape -> RGB uint8 with one more axis (NaN as 0)."""
    return colormap_lut(cmap)[lut_index(values)]


def colorize_rgba(values: np.ndarray, *, cmap: str) -> np.ndarray:
    """Like :func:`colorize`, with an alpha channel: opaque, and fully transparent at NaN."""
    rgba = np.zeros((*values.shape, 4), dtype=np.uint8)
    rgba[..., :3] = colorize(values, cmap=cmap)
    rgba[..., 3] = np.where(np.isfinite(values), 255, 0)
    return rgba


def blend(
    base: np.ndarray,
    values: np.ndarray,
    *,
    alpha: float | np.ndarray = 0.5,
    cmap: str,
) -> np.ndarray:
    """Blend colour-mapped ``values`` (same height and width as ``base``) over RGB ``base``.

    ``alpha`` is the colour's weight, one number or one per pixel; NaN values leave ``base``
    unchanged. Only the painted pixels are converted to float.
    """
    finite = np.isfinite(values)
    weight = np.broadcast_to(np.asarray(alpha, dtype=np.float32), values.shape)[finite][:, None]
    colors = colormap_lut(cmap)[lut_index(values[finite])].astype(np.float32)
    painted = base[finite].astype(np.float32) * (1.0 - weight) + colors * weight
    out = base.copy()
    out[finite] = np.clip(np.round(painted), 0, 255).astype(np.uint8)
    return out
