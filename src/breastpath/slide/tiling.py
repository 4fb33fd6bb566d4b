"""Tile a slide at the model's input size, skip background, read lazily and score in batches.

A grid of square tiles covers the chosen level; a tile is read when at least ``min_tissue`` of
its area is tissue on the :class:`~breastpath.slide.tissue.TissueMask` (tiles that touch the
mask with less are listed as skipped, reason ``mask``). Read tiles pass the per-tile checks of
:class:`~breastpath.inference.tiles.TileCheck` (background, not H&E) before the model sees them;
what fails is skipped with its reason and never scored. Kept tiles are read in blocks of
neighbouring tiles (one region read per block, so each TIFF tile is decoded about once), by a
small thread pool that also resamples and checks them (:func:`iter_checked`: the checks overlap
the model, skipped tiles are dropped at once) and runs ahead of the model by at most
``2 * workers`` blocks (a bounded queue). Memory is bounded by those blocks, one batch, and the
reader's tile cache; level 0 is never loaded whole.
Tiles are scored through :class:`~breastpath.inference.predictor.Predictor`, the same
preprocessing as every other entry point.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from breastpath.errors import NoTissueError, SlideError
from breastpath.inference.stages import timed
from breastpath.inference.tiles import (
    MIN_TILE_TISSUE,
    Checked,
    TileCheck,
    TileScores,
    check_batch,
    score_checked,
)

if TYPE_CHECKING:
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.stages import StageClock
    from breastpath.slide.reader import SlideReader
    from breastpath.slide.tissue import TissueMask


@dataclass(frozen=True)
class Resolution:
    """Where tiles are read: ``read_size`` pixels of ``level`` become ``tile_size`` pixels.

    ``step`` is the tile side in level-0 pixels; ``mpp`` the microns per pixel of a tile as
    the model sees it (None when the slide does not say).
    """

    level: int
    read_size: int
    tile_size: int
    step: float
    mpp: float | None


def resolve_resolution(
    reader: SlideReader, *, tile_size: int, level: int | None = None, mpp: float | None = None
) -> Resolution:
    """Pick the level and read size for ``tile_size`` tiles at ``level`` or at ``mpp``.

    With ``mpp`` the most reduced level at least as fine as ``mpp`` is read and each tile is
    resampled to ``tile_size``; with neither, level 0 at its own resolution.

    Examples
    --------
    >>> res = resolve_resolution(slide, tile_size=50, mpp=4.0)  # doctest: +SKIP
    >>> res.level, res.read_size  # a 0.25 mpp slide with a 4x pyramid  # doctest: +SKIP
    (2, 50)
    """
    if tile_size < 1:
        raise SlideError(f"tile size must be positive, got {tile_size}")
    if level is not None and mpp is not None:
        raise SlideError("give a level or an mpp, not both")
    if mpp is not None:
        if mpp <= 0:
            raise SlideError(f"mpp must be positive, got {mpp}")
        if reader.mpp is None:
            raise SlideError(f"{reader.path.name}: the slide does not record its mpp; use a level")
        downsample = mpp / reader.mpp
        level = reader.best_level_for_downsample(downsample)
        info = reader.levels[level]
        read = max(1, round(tile_size * downsample / info.downsample))
    else:
        level = 0 if level is None else level
        info = reader.check_level(level)
        read = tile_size
    step = read * info.downsample
    actual = None if reader.mpp is None else reader.mpp * step / tile_size
    return Resolution(level=level, read_size=read, tile_size=tile_size, step=step, mpp=actual)


@dataclass(frozen=True)
class TileGrid:
    """The kept tiles of a grid of ``n_rows x n_cols`` tiles (row-major order)."""

    resolution: Resolution
    n_rows: int
    n_cols: int
    rows: np.ndarray
    cols: np.ndarray
    tissue: np.ndarray
    #: Tiles that touch the mask with less than ``min_tissue`` (not read, reason ``mask``).
    low_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    low_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    low_tissue: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def x(self) -> np.ndarray:
        """Level-0 x of each kept tile's top-left corner."""
        return np.round(self.cols * self.resolution.step).astype(np.int64)

    @property
    def y(self) -> np.ndarray:
        """Level-0 y of each kept tile's top-left corner."""
        return np.round(self.rows * self.resolution.step).astype(np.int64)

    def records(
        self, probabilities: np.ndarray | None = None, skipped: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """One dict per tile for the tile CSV: the kept tiles (with their probability, or the
        reason they were skipped), then the tiles the mask skipped (reason ``mask``)."""
        step = round(self.resolution.step)
        out = []
        rows = np.r_[self.rows, self.low_rows].astype(np.int64)
        cols = np.r_[self.cols, self.low_cols].astype(np.int64)
        shares = np.r_[self.tissue, self.low_tissue]
        for i, (r, c, t) in enumerate(zip(rows, cols, shares, strict=True)):
            row: dict[str, Any] = {
                "tile": i,
                "row": int(r),
                "col": int(c),
                "x": round(c * self.resolution.step),
                "y": round(r * self.resolution.step),
                "size": step,
                "level": self.resolution.level,
                "tissue": round(float(t), 4),
                "probability": "",
                "skipped": "mask" if i >= len(self) else "",
            }
            if i < len(self):
                if skipped is not None and skipped[i]:
                    row["skipped"] = str(skipped[i])
                elif probabilities is not None and np.isfinite(probabilities[i]):
                    row["probability"] = round(float(probabilities[i]), 6)
            out.append(row)
        return out


def make_grid(
    reader: SlideReader,
    tissue: TissueMask,
    *,
    resolution: Resolution,
    min_tissue: float = MIN_TILE_TISSUE,
) -> TileGrid:
    """The tiles at ``resolution`` with at least ``min_tissue`` tissue.

    Raises
    ------
    NoTissueError
        No tile has enough tissue.
    """
    if not 0.0 <= min_tissue <= 1.0:
        raise SlideError(f"min_tissue must be in [0, 1], got {min_tissue}")
    level = reader.levels[resolution.level]
    n_rows = -(-level.height // resolution.read_size)
    n_cols = -(-level.width // resolution.read_size)
    step = resolution.step
    cols = np.arange(n_cols)
    x0, x1 = cols * step, (cols + 1) * step
    kept_rows, kept_cols, kept_tissue = [], [], []
    low_rows, low_cols, low_tissue = [], [], []
    for r in range(n_rows):  # row by row: memory stays O(n_cols) on huge grids
        y0 = np.full(n_cols, r * step)
        share = tissue.region_fraction(x0, y0, x1, y0 + step)
        keep = np.flatnonzero(share >= max(min_tissue, 1e-9))
        kept_rows.append(np.full(len(keep), r))
        kept_cols.append(keep)
        kept_tissue.append(share[keep])
        low = np.flatnonzero((share > 0) & (share < max(min_tissue, 1e-9)))
        low_rows.append(np.full(len(low), r))
        low_cols.append(low)
        low_tissue.append(share[low])
    rows = np.concatenate(kept_rows).astype(np.int64)
    if rows.size == 0:
        raise NoTissueError(
            f"{reader.path.name}: no tissue found ({tissue.method} threshold "
            f"{tissue.threshold:.3f}, {tissue.fraction:.2%} of the thumbnail is tissue, "
            f"no tile has {min_tissue:.0%} tissue)"
        )
    return TileGrid(
        resolution=resolution,
        n_rows=n_rows,
        n_cols=n_cols,
        rows=rows,
        cols=np.concatenate(kept_cols).astype(np.int64),
        tissue=np.concatenate(kept_tissue).astype(np.float64),
        low_rows=np.concatenate(low_rows).astype(np.int64),
        low_cols=np.concatenate(low_cols).astype(np.int64),
        low_tissue=np.concatenate(low_tissue).astype(np.float64),
    )


def _blocks(grid: TileGrid, per_side: int) -> list[np.ndarray]:
    """Kept-tile indices grouped by square blocks of ``per_side`` tiles, block-major order."""
    key_r, key_c = grid.rows // per_side, grid.cols // per_side
    order = np.lexsort((grid.cols, grid.rows, key_c, key_r))
    keys = key_r[order] * (grid.n_cols // per_side + 1) + key_c[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.split(order, starts[1:])


def _read_block(
    reader: SlideReader, grid: TileGrid, index: np.ndarray, clock: StageClock | None = None
) -> np.ndarray:
    res = grid.resolution
    rows, cols = grid.rows[index], grid.cols[index]
    r0, c0 = int(rows.min()), int(cols.min())
    height = (int(rows.max()) - r0 + 1) * res.read_size
    width = (int(cols.max()) - c0 + 1) * res.read_size
    location = (round(c0 * res.step), round(r0 * res.step))
    n = res.read_size
    tiles = np.empty((len(index), res.tile_size, res.tile_size, 3), dtype=np.uint8)
    with timed(clock, "read"):
        region = reader.read_region(location, res.level, (width, height))
        if n == res.tile_size:
            for i, (r, c) in enumerate(zip(rows - r0, cols - c0, strict=True)):
                tiles[i] = region[r * n : (r + 1) * n, c * n : (c + 1) * n]
            return tiles
    with timed(clock, "resample"):
        for i, (r, c) in enumerate(zip(rows - r0, cols - c0, strict=True)):
            tiles[i] = _resample(region[r * n : (r + 1) * n, c * n : (c + 1) * n], res.tile_size)
    return tiles


def _resample(tile: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    method = Image.Resampling.BOX if tile.shape[0] > size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(tile).resize((size, size), method), dtype=np.uint8)


def _ahead(jobs: list[np.ndarray], work: Callable[[np.ndarray], Any], workers: int) -> Iterator:
    """``work(job)`` for each job in order, by ``workers`` threads (0: in this thread) that run
    at most ``2 * workers`` jobs ahead of the consumer (a bounded queue)."""
    if workers <= 0:
        yield from (work(job) for job in jobs)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slide-read") as pool:
        pending: deque = deque()
        for job in jobs:
            pending.append(pool.submit(work, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def iter_tiles(
    reader: SlideReader,
    grid: TileGrid,
    *,
    workers: int = 2,
    block: int = 1024,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, tiles)``: kept-tile indices into ``grid`` and their RGB pixels.

    Blocks of about ``block`` level pixels are read by ``workers`` threads (0: in this thread),
    at most ``2 * workers`` ahead of the consumer.
    """
    jobs = _blocks(grid, max(1, block // grid.resolution.read_size))
    yield from _ahead(jobs, lambda index: (index, _read_block(reader, grid, index)), workers)


def iter_checked(
    reader: SlideReader,
    grid: TileGrid,
    *,
    check: Callable[[np.ndarray], np.ndarray],
    workers: int = 2,
    block: int = 1024,
    clock: StageClock | None = None,
) -> Iterator[Checked]:
    """:func:`iter_tiles` with the tile checks run in the reader threads: yield
    ``(indices, reasons, kept tiles)`` (:func:`~breastpath.inference.tiles.check_batch`), so
    reading, resampling and checking overlap the model and skipped tiles are dropped at once.
    """

    def work(index: np.ndarray) -> Checked:
        return check_batch(check, index, _read_block(reader, grid, index, clock), clock=clock)

    jobs = _blocks(grid, max(1, block // grid.resolution.read_size))
    yield from _ahead(jobs, work, workers)


def score_grid(
    reader: SlideReader,
    grid: TileGrid,
    predictor: Predictor,
    *,
    check: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 256,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
    clock: StageClock | None = None,
) -> TileScores:
    """Check every kept tile and score the ones that pass, through the one tile core
    (:func:`~breastpath.inference.tiles.check_batch` in the reader threads, then
    :func:`~breastpath.inference.tiles.score_checked`; default check
    :class:`~breastpath.inference.tiles.TileCheck`). ``clock`` counts CPU seconds per stage
    (:class:`~breastpath.inference.stages.StageClock`).

    Examples
    --------
    >>> scores = score_grid(slide, grid, Predictor.from_checkpoint("default"))  # doctest: +SKIP
    >>> scores.probabilities.shape == (len(grid),), scores.counts()  # doctest: +SKIP
    (True, {'scored': 812, 'background': 40})
    """
    checked = iter_checked(
        reader, grid, check=TileCheck() if check is None else check, workers=workers, clock=clock
    )
    return score_checked(
        predictor, checked, total=len(grid), batch_size=batch_size, progress=progress, clock=clock
    )
