"""Cut an image larger than the model's input into input-size tiles, and score it from them.

Tiles are laid edge to edge from the top-left corner at the image's own resolution (no resizing:
a 700x460 image and a 50x50 model give a 10 x 14 grid). Tiles at the right and bottom edges that
run past the image are padded with white by :func:`~breastpath.data.transforms.fit_to_size`, the
same rule as for IDC edge patches.

Image-level tile score: the **mean** of the tile probabilities over tissue tiles (tiles with at
least ``MIN_TISSUE_FRACTION`` of their pixels tissue by :mod:`breastpath.tissue`, luminosity below
``TISSUE_LUMINOSITY``, and, when the input-quality gate has been run on them, passing it), the
reduction the evaluation uses for patient scores; over all tiles when no tile holds tissue. The
maximum tile probability and the fraction of tissue tiles at or above the threshold are
reported alongside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from breastpath import tissue as tissue_rule
from breastpath.data.transforms import fit_to_size

#: Pixels with luminosity (CIE L* / 100) below this count as tissue.
TISSUE_LUMINOSITY = tissue_rule.MAX_LUMINOSITY
#: A tile is a tissue tile when at least this fraction of its pixels is tissue.
MIN_TISSUE_FRACTION = tissue_rule.MIN_TISSUE_FRACTION
#: How the image-level score is made from the tile scores (reported by the API).
AGGREGATION = (
    f"mean tile probability over tissue tiles (>= {MIN_TISSUE_FRACTION:.0%} of pixels with "
    f"luminosity < {TISSUE_LUMINOSITY:.0%}, passing the quality gate); over all tiles when "
    "none holds tissue"
)


@dataclass
class TileGrid:
    """Tiles of one image, in row-major order."""

    rows: int
    cols: int
    tile_size: tuple[int, int]  # (height, width)
    image_size: tuple[int, int]  # (height, width)
    tiles: np.ndarray  # (rows * cols, th, tw, 3) uint8
    tissue_fraction: np.ndarray  # (rows, cols) float
    #: (rows, cols) bool: tiles that pass the input-quality gate (None: not checked)
    passed: np.ndarray | None = None

    @property
    def count(self) -> int:
        return self.rows * self.cols

    @property
    def tissue(self) -> np.ndarray:
        """(rows, cols) bool: which tiles hold tissue (and pass the gate, when it was run)."""
        enough = self.tissue_fraction >= MIN_TISSUE_FRACTION
        return enough if self.passed is None else enough & self.passed


def needs_tiling(shape: tuple[int, ...], input_size: tuple[int, int]) -> bool:
    """Whether an image of ``shape`` is larger than the input in some dimension."""
    return shape[0] > input_size[0] or shape[1] > input_size[1]


def tile_count(shape: tuple[int, ...], input_size: tuple[int, int]) -> int:
    """Number of tiles :func:`make_tiles` would cut."""
    return math.ceil(shape[0] / input_size[0]) * math.ceil(shape[1] / input_size[1])


def tissue_fraction(pixels: np.ndarray) -> float:
    """Tissue share of ``(H, W, 3)`` uint8 pixels (:func:`breastpath.tissue.tissue_fraction`)."""
    return float(tissue_rule.tissue_fraction(pixels, max_luminosity=TISSUE_LUMINOSITY))


def make_tiles(image: np.ndarray, input_size: tuple[int, int]) -> TileGrid:
    """Cut ``image`` (``(H, W, 3)`` uint8) into a grid of input-size tiles.

    Examples
    --------
    >>> grid = make_tiles(np.zeros((460, 700, 3), np.uint8), (50, 50))
    >>> grid.rows, grid.cols, grid.tiles.shape
    (10, 14, (140, 50, 50, 3))
    """
    th, tw = input_size
    height, width = image.shape[:2]
    rows, cols = math.ceil(height / th), math.ceil(width / tw)
    tiles = np.empty((rows * cols, th, tw, 3), dtype=np.uint8)
    fraction = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            piece = image[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
            tiles[r * cols + c], _ = fit_to_size(np.ascontiguousarray(piece), input_size)
            fraction[r, c] = tissue_fraction(piece)
    return TileGrid(rows, cols, (th, tw), (height, width), tiles, fraction)


def aggregate(grid: TileGrid, cancer: np.ndarray, *, threshold: float) -> dict[str, Any]:
    """Image-level tile score and tile map for the API.

    Parameters
    ----------
    grid
        The tiles.
    cancer
        Cancer probability of each tile, ``(rows * cols,)``.
    threshold
        The checkpoint's decision threshold.
    """
    scores = np.asarray(cancer, dtype=np.float64).reshape(grid.rows, grid.cols)
    tissue = grid.tissue
    used = scores[tissue] if tissue.any() else scores.ravel()
    probability = float(used.mean())
    return {
        "rows": grid.rows,
        "cols": grid.cols,
        "tile_size": list(grid.tile_size),
        "count": grid.count,
        "tissue_count": int(tissue.sum()),
        "aggregation": AGGREGATION,
        "probability": round(probability, 6),
        "is_cancer": bool(probability >= threshold),
        "max": round(float(used.max()), 6),
        "positive_fraction": round(float(np.mean(used >= threshold)), 6),
        "probabilities": np.round(scores, 6).tolist(),
        "tissue": tissue.tolist(),
    }


def stitch(maps: np.ndarray, grid: TileGrid) -> np.ndarray:
    """Put per-tile maps ``(rows * cols, th, tw)`` back together as one ``(H, W)`` image map."""
    th, tw = grid.tile_size
    blocks = maps.reshape(grid.rows, grid.cols, th, tw).transpose(0, 2, 1, 3)
    full = blocks.reshape(grid.rows * th, grid.cols * tw)
    return np.ascontiguousarray(full[: grid.image_size[0], : grid.image_size[1]])
