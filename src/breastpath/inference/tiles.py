"""The one tile core: cut an image into model-size tiles, check each tile, score the ones that
pass in batches, and hand the probabilities to the verdict rule.

Every entry point that scores more than one tile for one verdict goes through here: the API
and page (an image larger than the model's input), ``predict`` (the same images from the
command line), ``slide`` (tiles read from a slide level by :mod:`breastpath.slide.tiling`) and
``mosaic`` (an IDC patient's patches). Reductions of tile probabilities to a verdict live in
:mod:`breastpath.inference.verdict`; what counts as tissue in :mod:`breastpath.tissue`; the
H&E gate in :mod:`breastpath.inference.quality`.

Tile checks (:class:`TileCheck`, the skip reasons of :data:`SKIP_REASONS`)
---------------------------------------------------------------------------
``dark``        the input-quality gate finds the tile too dark: a black frame, a fluorescence
                scan's background.
``background``  fewer than ``min_tissue`` of the tile's pixels are tissue (glass, a lumen, fat).
``not_he``      the gate finds the tile's colours outside the H&E range (fluorescence, IHC, ink).
``no_texture``  the gate finds no tissue texture: a flat field or pixel noise.
``mask``        (slides only) below ``min_tissue`` on the slide's thumbnail tissue mask: not read.

Tiles of an image (:func:`cut_tiles`) are laid edge to edge from the top-left corner at the
image's own resolution (no resizing: a 700x460 image and a 50x50 model give a 10 x 14 grid);
tiles that run past the right or bottom edge are padded with white
(:func:`~breastpath.data.transforms.fit_to_size`, the rule for IDC edge patches).

Examples
--------
>>> import numpy as np
>>> glass = np.full((1, 50, 50, 3), (241, 235, 238), np.uint8)
>>> black = np.zeros((1, 50, 50, 3), np.uint8)
>>> TileCheck()(np.concatenate([glass, black])).tolist()
['background', 'dark']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from breastpath.data.transforms import fit_to_size
from breastpath.errors import ConfigError
from breastpath.inference.quality import (
    REASON_BACKGROUND,
    REASON_DARK,
    REASON_NO_TEXTURE,
    REASON_OK,
    assess_batch,
)
from breastpath.inference.stages import timed

if TYPE_CHECKING:
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.stages import StageClock
    from breastpath.inference.verdict import VerdictRule

__all__ = [
    "MIN_TILE_TISSUE",
    "SKIP_REASONS",
    "ImageTiles",
    "TileCheck",
    "TileScores",
    "check_batch",
    "cut_tiles",
    "image_tile_summary",
    "needs_tiling",
    "score_checked",
    "score_tiles",
    "stitch",
    "tile_count",
    "tile_summary",
]

#: Why a tile was not scored (the ``skipped`` column of tiles.csv); "" means scored.
SKIP_REASONS = {
    "mask": "below min_tissue on the thumbnail tissue mask (not read)",
    "dark": "too dark for the quality gate (black frame, fluorescence background)",
    "background": "below min_tissue tissue pixels at full resolution (glass, lumen, hole, fat)",
    "not_he": "colours outside the H&E range for the quality gate (fluorescence, IHC, ink)",
    "no_texture": "no tissue texture for the quality gate (a flat field or pixel noise)",
}
#: ``predict`` gives a tile verdict to images of at most this many tiles (the API's own limit
#: is ``ServeLimits.max_tiles``).
MAX_IMAGE_TILES = 4096
#: A tile is scored when at least this share of its pixels is tissue (by default).
MIN_TILE_TISSUE = 0.25
_GATE_REASONS = {
    REASON_OK: "",
    REASON_DARK: "dark",
    REASON_BACKGROUND: "background",
    REASON_NO_TEXTURE: "no_texture",
}


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

    min_tissue: float = MIN_TILE_TISSUE
    he_check: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ConfigError(f"min_tissue must be in [0, 1], got {self.min_tissue}")

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """``(N,)`` array of reasons, ``""`` for tiles to score, for ``(N, H, W, 3)`` uint8."""
        if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
            raise ConfigError(f"expected (N, H, W, 3) uint8 tiles, got {tiles.shape} {tiles.dtype}")
        # one colour-table lookup per pixel gives the gate's colour classes and the tissue
        # share (the one tissue rule, breastpath.tissue, at its default 0.8 luminosity)
        gate, tissue = assess_batch(tiles)
        if self.he_check:
            reasons = np.array([_GATE_REASONS.get(r, "not_he") for r in gate], dtype=object)
        else:
            reasons = np.full(len(tiles), "", dtype=object)
        reasons[(reasons == "") & (tissue < max(self.min_tissue, 1e-9))] = "background"
        return reasons


@dataclass(frozen=True)
class TileScores:
    """Per tile: the cancer probability (NaN when skipped) and why it was skipped (``""`` when
    scored; see :data:`SKIP_REASONS`)."""

    probabilities: np.ndarray
    skipped: np.ndarray

    @property
    def scored(self) -> np.ndarray:
        """Bool mask of the tiles that were scored."""
        return self.skipped == ""

    def counts(self) -> dict[str, int]:
        """Number of tiles scored and skipped per reason."""
        reasons, numbers = np.unique(self.skipped.astype(str), return_counts=True)
        out = {"scored": 0}
        out.update({str(r) or "scored": int(n) for r, n in zip(reasons, numbers, strict=True)})
        return out


#: ``(indices, reasons, kept)``: tile positions, their skip reasons (``""`` = to score) and the
#: pixels of the tiles to score only, in the order of ``indices``.
Checked = tuple[np.ndarray, np.ndarray, np.ndarray]


def check_batch(
    check: Callable[[np.ndarray], np.ndarray],
    index: np.ndarray,
    tiles: np.ndarray,
    *,
    clock: StageClock | None = None,
) -> Checked:
    """Run ``check`` on a batch and keep the pixels of the tiles that pass (a reader thread
    calls this, so the checks run beside the model and skipped tiles are dropped early).

    >>> index, reasons, kept = check_batch(TileCheck(), np.arange(2),
    ...                                    np.full((2, 50, 50, 3), 255, np.uint8))
    >>> reasons.tolist(), kept.shape
    (['background', 'background'], (0, 50, 50, 3))
    """
    with timed(clock, "check"):
        reasons = check(tiles)
        kept = tiles[reasons == ""] if (reasons != "").any() else tiles
    return np.asarray(index, dtype=np.int64), reasons, kept


def score_tiles(
    predictor: Predictor,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    total: int,
    check: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> TileScores:
    """Check every tile and score the ones that pass, ``batch_size`` tiles per model call.

    Parameters
    ----------
    predictor
        The model (its preprocessing, stain normalization and cancer score).
    batches
        ``(indices, tiles)`` pairs: positions in ``range(total)`` and ``(n, H, W, 3)`` uint8
        pixels, in any grouping (slide blocks, one image's grid, a patient's patches).
    total
        Number of tiles.
    check
        Skip reasons per tile (default :class:`TileCheck`).
    progress
        Called with the number of tiles checked after each model call.

    Examples
    --------
    >>> tiles = np.full((3, 50, 50, 3), 255, np.uint8)  # glass: skipped, never scored
    >>> score_tiles(None, [(np.arange(3), tiles)], total=3).counts()
    {'scored': 0, 'background': 3}
    """
    check = TileCheck() if check is None else check
    checked = (check_batch(check, index, tiles) for index, tiles in _gather(batches, batch_size))
    return score_checked(predictor, checked, total=total, batch_size=batch_size, progress=progress)


def _gather(
    batches: Iterable[tuple[np.ndarray, np.ndarray]], size: int
) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """Regroup ``(indices, tiles)`` batches into batches of at least ``size`` tiles (the last
    may be smaller), so the checks run on whole batches."""
    held_index: list[np.ndarray] = []
    held_tiles: list[np.ndarray] = []
    held = 0
    for index, tiles in batches:
        held_index.append(np.asarray(index, dtype=np.int64))
        held_tiles.append(tiles)
        held += len(index)
        if held >= size:
            yield np.concatenate(held_index), np.concatenate(held_tiles)
            held_index, held_tiles, held = [], [], 0
    if held:
        yield np.concatenate(held_index), np.concatenate(held_tiles)


def score_checked(
    predictor: Predictor,
    batches: Iterable[Checked],
    *,
    total: int,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
    clock: StageClock | None = None,
) -> TileScores:
    """Score tiles that were already checked (:func:`check_batch`), ``batch_size`` kept tiles
    per model call; the scoring half of :func:`score_tiles`.

    ``progress`` is called with the number of tiles checked since its last call, after each
    model call and at the end; ``clock`` counts the model calls as stage ``model`` (the
    calling thread's CPU only).
    """
    probabilities = np.full(total, np.nan)
    skipped = np.full(total, "", dtype=object)
    held_index: list[np.ndarray] = []
    held_tiles: list[np.ndarray] = []
    held = checked = 0

    def flush() -> None:
        nonlocal held, checked
        if held:
            assert predictor is not None, "tiles passed the checks but no predictor was given"
            index = np.concatenate(held_index)
            tiles: Any = np.concatenate(held_tiles)  # (N, H, W, 3): a sequence of images
            with timed(clock, "model"):
                batch = predictor.prepare(tiles)
                scores = predictor.cancer_probability(predictor.predict_proba(batch))
            probabilities[index] = scores
        held_index.clear()
        held_tiles.clear()
        if progress is not None and checked:
            progress(checked)
        held = checked = 0

    for index, reasons, kept in batches:
        skipped[index] = reasons
        checked += len(index)
        if len(kept):
            held_index.append(index[reasons == ""])
            held_tiles.append(kept)
            held += len(kept)
        if held >= batch_size:
            flush()
    flush()
    return TileScores(probabilities=probabilities, skipped=skipped)


# --------------------------------------------------------------------------- tiles of an image
@dataclass
class ImageTiles:
    """Model-size tiles of one image, row-major, and the checks' verdict on each."""

    rows: int
    cols: int
    tile_size: tuple[int, int]  # (height, width)
    image_size: tuple[int, int]  # (height, width)
    tiles: np.ndarray  # (rows * cols, th, tw, 3) uint8
    #: (rows * cols,) skip reason per tile ("" = assessed); None until :meth:`check` ran
    skipped: np.ndarray | None = None

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def check(self, check: Callable[[np.ndarray], np.ndarray] | None = None) -> ImageTiles:
        """Run the tile checks (default :class:`TileCheck`) on the tiles; returns self."""
        self.skipped = (TileCheck() if check is None else check)(self.tiles)
        return self

    @property
    def assessed(self) -> np.ndarray:
        """(rows, cols) bool: tiles that passed the checks (all of them before :meth:`check`)."""
        if self.skipped is None:
            return np.ones((self.rows, self.cols), dtype=bool)
        return (self.skipped == "").reshape(self.rows, self.cols)


def needs_tiling(shape: tuple[int, ...], input_size: tuple[int, int]) -> bool:
    """Whether an image of ``shape`` is larger than the input in some dimension."""
    return shape[0] > input_size[0] or shape[1] > input_size[1]


def tile_count(shape: tuple[int, ...], input_size: tuple[int, int]) -> int:
    """Number of tiles :func:`cut_tiles` would cut."""
    return math.ceil(shape[0] / input_size[0]) * math.ceil(shape[1] / input_size[1])


def cut_tiles(image: np.ndarray, input_size: tuple[int, int]) -> ImageTiles:
    """Cut ``image`` (``(H, W, 3)`` uint8) into a grid of input-size tiles.

    Examples
    --------
    >>> grid = cut_tiles(np.zeros((460, 700, 3), np.uint8), (50, 50))
    >>> grid.rows, grid.cols, grid.tiles.shape
    (10, 14, (140, 50, 50, 3))
    """
    th, tw = input_size
    height, width = image.shape[:2]
    rows, cols = math.ceil(height / th), math.ceil(width / tw)
    tiles = np.empty((rows * cols, th, tw, 3), dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            piece = image[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
            tiles[r * cols + c], _ = fit_to_size(np.ascontiguousarray(piece), input_size)
    return ImageTiles(rows, cols, (th, tw), (height, width), tiles)


def stitch(maps: np.ndarray, grid: ImageTiles) -> np.ndarray:
    """Put per-tile maps ``(rows * cols, th, tw)`` back together as one ``(H, W)`` image map."""
    th, tw = grid.tile_size
    blocks = maps.reshape(grid.rows, grid.cols, th, tw).transpose(0, 2, 1, 3)
    full = blocks.reshape(grid.rows * th, grid.cols * tw)
    return np.ascontiguousarray(full[: grid.image_size[0], : grid.image_size[1]])


def tile_summary(
    grid: ImageTiles, probabilities: np.ndarray, *, rule: VerdictRule
) -> dict[str, Any]:
    """The tile map and verdict of one image, as the API, the page and ``predict`` report it.

    ``probabilities`` holds every tile's cancer probability, ``(rows * cols,)``; only the
    assessed tiles reach the verdict (:meth:`VerdictRule.apply`).

    Examples
    --------
    >>> from breastpath.inference.verdict import VerdictRule
    >>> grid = cut_tiles(np.full((100, 50, 3), 255, np.uint8), (50, 50))
    >>> s = tile_summary(grid, np.array([0.9, 0.1]), rule=VerdictRule(reduction="mean",
    ...                  threshold=0.5))
    >>> s["rows"], s["cols"], s["verdict"]["label"], s["label"]
    (2, 1, 'positive', 'positive')
    """
    scores = np.asarray(probabilities, dtype=np.float64).reshape(grid.rows, grid.cols)
    assessed = grid.assessed
    verdict = rule.apply(scores[assessed])
    reasons = (
        np.full(grid.count, "", dtype=object) if grid.skipped is None else grid.skipped
    ).reshape(grid.rows, grid.cols)
    return {
        "rows": grid.rows,
        "cols": grid.cols,
        "tile_size": list(grid.tile_size),
        "count": grid.count,
        "assessed_count": int(assessed.sum()),
        "label": verdict.label,
        "is_cancer": verdict.positive,
        "score": None if verdict.score is None else round(verdict.score, 6),
        "extent": None if verdict.extent is None else round(verdict.extent, 6),
        "max": round(float(scores[assessed].max()), 6) if assessed.any() else None,
        "verdict": verdict.to_dict(),
        "probabilities": np.round(scores, 6).tolist(),
        "assessed": assessed.tolist(),
        "skipped": reasons.tolist(),
    }


def image_tile_summary(
    predictor: Predictor, image: np.ndarray, *, max_tiles: int | None = None
) -> dict[str, Any] | None:
    """The tile map and verdict of one decoded image larger than the model's input (None for
    an image that fits it, for a model of whole stretched fields, or past ``max_tiles``):
    cut, checked and scored here, reduced by the model's verdict rule (what ``predict``
    reports; the API scores the same tiles in its batched engine)."""
    size = predictor.input_size
    if not needs_tiling(image.shape, size) or predictor.meta.input_fit == "stretch":
        return None
    if max_tiles is not None and tile_count(image.shape, size) > max_tiles:
        return None
    grid = cut_tiles(image, size).check()
    probabilities = np.full(grid.count, np.nan)
    assessed = grid.assessed.ravel()
    if assessed.any():
        batch = predictor.prepare(grid.tiles[assessed])
        probabilities[assessed] = predictor.cancer_probability(predictor.predict_proba(batch))
    return tile_summary(grid, probabilities, rule=predictor.verdict_rule())
