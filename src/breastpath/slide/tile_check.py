"""Per-tile checks run on the pixels of every tile before it is scored.

The thumbnail mask (:mod:`breastpath.slide.tissue`) says where tissue may be; these checks
look at each tile at the resolution the model sees and skip, with a reason, what is not
scoreable tissue:

``background``  fewer than ``min_tissue`` of the tile's pixels are tissue: glass, a lumen, a
                hole in the section, fat. Tissue is the project's luminosity rule (CIE L*/100
                below 0.8, staintools' convention; ``breastpath.tissue``).
``not_he``      at least half of the tile is near-black (L* below 10): a fluorescence or
                dark-field image, not a brightfield H&E stain.

Tiles the thumbnail mask put below ``min_tissue`` are skipped before reading, with the reason
``mask`` (see :class:`~breastpath.slide.tiling.TileGrid`). The slide score is computed on the
tiles that pass.

Examples
--------
>>> import numpy as np
>>> glass = np.full((1, 50, 50, 3), (241, 235, 238), np.uint8)
>>> pink = np.full((1, 50, 50, 3), (200, 120, 170), np.uint8)
>>> black = np.zeros((1, 50, 50, 3), np.uint8)
>>> TileCheck()(np.concatenate([glass, pink, black])).tolist()
['background', '', 'not_he']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from breastpath.errors import SlideError
from breastpath.tissue import luminance, luminance_threshold

#: Why a tile was not scored (the ``skipped`` column of tiles.csv); "" means scored.
SKIP_REASONS = {
    "mask": "below min_tissue on the thumbnail tissue mask (not read)",
    "background": "below min_tissue tissue pixels at full resolution (glass, lumen, hole, fat)",
    "not_he": "mostly near-black: fluorescence or dark-field, not brightfield H&E",
}
#: Luminosity (CIE L* / 100) below which a pixel is tissue.
MAX_LUMINOSITY = 0.8
#: Luminosity below which a pixel is near-black.
DARK_LUMINOSITY = 0.1
#: Share of near-black pixels at which a tile is not H&E-like.
DARK_SHARE = 0.5


@dataclass(frozen=True)
class TileCheck:
    """Skip reasons for a batch of tiles (see the module docstring).

    Parameters
    ----------
    min_tissue
        Minimum share of tissue pixels.
    he_check
        Also flag near-black (fluorescence, dark-field) tiles as ``not_he``.
    """

    min_tissue: float = 0.25
    he_check: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_tissue <= 1.0:
            raise SlideError(f"min_tissue must be in [0, 1], got {self.min_tissue}")

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """``(N,)`` array of reasons, ``""`` for tiles to score, for ``(N, H, W, 3)`` uint8."""
        if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
            raise SlideError(f"expected (N, H, W, 3) uint8 tiles, got {tiles.shape} {tiles.dtype}")
        y = luminance(tiles).reshape(len(tiles), -1)  # the one tissue rule: breastpath.tissue
        reasons = np.full(len(tiles), "", dtype=object)
        tissue = (y < luminance_threshold(MAX_LUMINOSITY)).mean(axis=1)
        reasons[tissue < max(self.min_tissue, 1e-9)] = "background"
        if self.he_check:
            dark = (y < luminance_threshold(DARK_LUMINOSITY)).mean(axis=1)
            reasons[dark >= DARK_SHARE] = "not_he"
        return reasons


def dark_background(thumbnail: np.ndarray) -> bool:
    """Whether most of a slide's thumbnail is near-black (a fluorescence or dark-field scan)."""
    y = luminance(thumbnail).ravel()
    return bool((y < luminance_threshold(DARK_LUMINOSITY)).mean() >= DARK_SHARE)
