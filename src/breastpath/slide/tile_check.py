"""Per-tile checks run on the pixels of every tile before it is scored.

The thumbnail mask (:mod:`breastpath.slide.tissue`) says where tissue may be; these checks
look at each tile at the resolution the model sees and skip, with a reason, what is not
scoreable tissue:

``dark``        the input-quality gate (:mod:`breastpath.inference.quality`) finds the tile too
                dark: a black frame, a fluorescence scan's background.
``background``  fewer than ``min_tissue`` of the tile's pixels are tissue: glass, a lumen, a
                hole in the section, fat. Tissue is the project's luminosity rule (CIE L*/100
                below 0.8, staintools' convention; ``breastpath.tissue``); the gate's own
                (looser) background verdict gives the same reason.
``not_he``      the gate finds the tile's colours outside the haematoxylin/eosin range
                (fluorescence, IHC, ink, a photo).

Tiles the thumbnail mask put below ``min_tissue`` are skipped before reading, with the reason
``mask`` (see :class:`~breastpath.slide.tiling.TileGrid`). The slide score is computed on the
tiles that pass.

Examples
--------
>>> import numpy as np
>>> glass = np.full((1, 50, 50, 3), (241, 235, 238), np.uint8)
>>> pink = np.full((1, 50, 50, 3), (200, 120, 170), np.uint8)
>>> black = np.zeros((1, 50, 50, 3), np.uint8)
>>> green = np.full((1, 50, 50, 3), (40, 200, 60), np.uint8)
>>> TileCheck()(np.concatenate([glass, pink, black, green])).tolist()
['background', '', 'dark', 'not_he']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from breastpath.errors import SlideError
from breastpath.inference.quality import REASON_BACKGROUND, REASON_DARK, REASON_OK, assess
from breastpath.tissue import luminance, luminance_threshold

#: Why a tile was not scored (the ``skipped`` column of tiles.csv); "" means scored.
SKIP_REASONS = {
    "mask": "below min_tissue on the thumbnail tissue mask (not read)",
    "dark": "too dark for the quality gate (black frame, fluorescence background)",
    "background": "below min_tissue tissue pixels at full resolution (glass, lumen, hole, fat)",
    "not_he": "colours outside the H&E range for the quality gate (fluorescence, IHC, ink)",
}
#: Tiles per call of the quality gate.
GATE_CHUNK = 64
_GATE_REASONS = {REASON_OK: "", REASON_DARK: "dark", REASON_BACKGROUND: "background"}
#: Luminosity (CIE L* / 100) below which a pixel is tissue.
MAX_LUMINOSITY = 0.8
#: Luminosity below which a pixel is near-black (the slide-level check).
DARK_LUMINOSITY = 0.1
#: Share of near-black thumbnail pixels at which a slide is a fluorescence/dark-field scan.
DARK_SHARE = 0.5


@dataclass(frozen=True)
class TileCheck:
    """Skip reasons for a batch of tiles (see the module docstring).

    Parameters
    ----------
    min_tissue
        Minimum share of tissue pixels.
    he_check
        Also run the input-quality gate (``dark``, ``not_he``).
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
        if self.he_check:  # in chunks: the gate's float arrays stay small
            for start in range(0, len(tiles), GATE_CHUNK):
                verdicts = assess(tiles[start : start + GATE_CHUNK])
                reasons[start : start + len(verdicts)] = [
                    _GATE_REASONS.get(q.reason, "not_he") for q in verdicts
                ]
        tissue = (y < luminance_threshold(MAX_LUMINOSITY)).mean(axis=1)
        reasons[(reasons == "") & (tissue < max(self.min_tissue, 1e-9))] = "background"
        return reasons


def dark_background(thumbnail: np.ndarray) -> bool:
    """Whether most of a slide's thumbnail is near-black (a fluorescence or dark-field scan)."""
    y = luminance(thumbnail).ravel()
    return bool((y < luminance_threshold(DARK_LUMINOSITY)).mean() >= DARK_SHARE)
