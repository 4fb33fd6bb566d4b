"""Slide-level checks: whether a whole scan is brightfield at all.

The per-tile checks (background, not H&E, too dark) are the one tile core's
:class:`breastpath.inference.tiles.TileCheck`, re-exported here for the slide code.
"""

from __future__ import annotations

import numpy as np

from breastpath.inference.tiles import SKIP_REASONS, TileCheck
from breastpath.tissue import luminance, luminance_threshold

__all__ = ["DARK_LUMINOSITY", "DARK_SHARE", "SKIP_REASONS", "TileCheck", "dark_background"]

#: Luminosity below which a pixel is near-black (the slide-level check).
DARK_LUMINOSITY = 0.1
#: Share of near-black thumbnail pixels at which a slide is a fluorescence/dark-field scan.
DARK_SHARE = 0.5


def dark_background(thumbnail: np.ndarray) -> bool:
    """Whether most of a slide's thumbnail is near-black (a fluorescence or dark-field scan)."""
    y = luminance(thumbnail).ravel()
    return bool((y < luminance_threshold(DARK_LUMINOSITY)).mean() >= DARK_SHARE)
