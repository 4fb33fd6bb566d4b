"""One call from a slide file to its heatmap: open, find tissue, tile, score, write.

``breastpath slide`` and ``benchmarks/bench_slide.py`` are thin shells over
:func:`analyze_slide`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from breastpath.slide.heatmap import SlideScore, slide_score, write_slide_outputs
from breastpath.slide.reader import open_slide
from breastpath.slide.tiling import TileGrid, make_grid, resolve_resolution, score_grid
from breastpath.slide.tissue import TissueMask, detect_tissue

if TYPE_CHECKING:
    from breastpath.inference.predictor import Predictor

#: Apparent resolution of the IDC patches (40x scans downsampled 16:1, about 2.5x), microns per
#: pixel; the default ``mpp`` for IDC models on slides that record their mpp.
IDC_MPP = 4.0


@dataclass
class SlideResult:
    """What :func:`analyze_slide` found and wrote."""

    score: SlideScore
    grid: TileGrid
    tissue: TissueMask
    probabilities: np.ndarray
    info: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


def default_mpp(predictor: Predictor, slide_mpp: float | None) -> float | None:
    """:data:`IDC_MPP` for a model trained on IDC patches when the slide records its mpp."""
    dataset = predictor.describe().get("dataset")
    return IDC_MPP if dataset == "idc" and slide_mpp is not None else None


def analyze_slide(
    path: str | Path,
    predictor: Predictor,
    *,
    out_dir: str | Path | None = None,
    tile_size: int | None = None,
    level: int | None = None,
    mpp: float | None = None,
    threshold: float | None = None,
    top_k: int = 20,
    min_tissue: float = 0.25,
    tissue_method: str = "saturation",
    thumbnail_size: int = 2048,
    batch_size: int = 256,
    workers: int = 2,
    backend: str = "auto",
    on_grid: Callable[[TileGrid], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SlideResult:
    """Score the tissue of a whole-slide image tile by tile.

    Parameters
    ----------
    path
        Slide file (see :func:`breastpath.slide.reader.open_slide`).
    predictor
        Model used to score tiles.
    out_dir
        Write ``heatmap.png``, ``tissue.png``, ``tiles.csv``, ``slide.json`` here (optional).
    tile_size
        Tile side given to the model; default the model's input size.
    level, mpp
        Read tiles from this pyramid level, or at this resolution (microns per pixel). With
        neither: :data:`IDC_MPP` for IDC models when the slide records its mpp, else level 0.
    threshold
        Tile threshold for the slide score; default the model's.
    top_k
        ``k`` of the headline top-k mean score.
    min_tissue
        Keep tiles with at least this share of tissue.
    on_grid
        Called with the tile grid before scoring starts (to size a progress bar).
    progress
        Called with the number of tiles scored after each batch.

    Examples
    --------
    >>> from breastpath.inference.predictor import Predictor
    >>> result = analyze_slide("slide.ome.tif", Predictor.from_checkpoint("default"),
    ...                        out_dir="out")  # doctest: +SKIP
    >>> result.score.top_k_mean  # doctest: +SKIP
    0.91
    """
    started = time.perf_counter()
    with open_slide(path, backend=backend) as reader:
        if level is None and mpp is None:
            mpp = default_mpp(predictor, reader.mpp)
        size = tile_size or int(predictor.input_size[0])
        resolution = resolve_resolution(reader, tile_size=size, level=level, mpp=mpp)
        tissue = detect_tissue(reader, max_size=thumbnail_size, method=tissue_method)
        grid = make_grid(reader, tissue, resolution=resolution, min_tissue=min_tissue)
        tissue_s = time.perf_counter() - started
        if on_grid is not None:
            on_grid(grid)
        scoring = time.perf_counter()
        probabilities = score_grid(
            reader, grid, predictor, batch_size=batch_size, workers=workers, progress=progress
        )
        score_s = time.perf_counter() - scoring
        slide_info = reader.describe()
    cutoff = predictor.threshold if threshold is None else threshold
    score = slide_score(probabilities, threshold=cutoff, top_k=top_k)
    info = {
        "slide": slide_info,
        "model": predictor.describe(),
        "tiling": {
            "level": resolution.level,
            "read_size": resolution.read_size,
            "tile_size": resolution.tile_size,
            "step_level0": resolution.step,
            "mpp": resolution.mpp,
            "requested_mpp": mpp,
            "grid": [grid.n_rows, grid.n_cols],
            "tiles_scored": len(grid),
            "min_tissue": min_tissue,
        },
        "tissue": {
            "method": tissue.method,
            "threshold": tissue.threshold,
            "fraction_of_thumbnail": tissue.fraction,
            "thumbnail": list(tissue.thumbnail.shape[:2]),
        },
        "timing": {
            "tissue_and_grid_s": round(tissue_s, 3),
            "scoring_s": round(score_s, 3),
            "tiles_per_s": round(len(grid) / score_s, 1) if score_s > 0 else None,
        },
    }
    result = SlideResult(score, grid, tissue, probabilities, info)
    if out_dir is not None:
        result.paths = write_slide_outputs(
            out_dir, tissue=tissue, grid=grid, probabilities=probabilities, score=score, info=info
        )
    return result
