"""One call from a slide file to its heatmap: open, find tissue, tile, check, score, write.

``breastpath slide`` and ``benchmarks/bench_slide.py`` are thin shells over
:func:`analyze_slide`.

Scale (microns per pixel)
-------------------------
A model trained at a known scale states it in its checkpoint (``CheckpointMeta.mpp``; IDC
models without the field are taken to expect :data:`IDC_MPP`). With neither ``level`` nor
``mpp`` given, tiles are read at the model's scale, which needs the slide's own mpp (from the
file, or ``slide_mpp``): a slide that records none is refused with a message naming
``--slide-mpp`` and ``--level``, never tiled at level 0 silently. An explicit ``level`` is
used as it is, with a note when its scale is unknown or far from the model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from breastpath.errors import SlideError
from breastpath.inference.stages import timed
from breastpath.inference.tiles import MIN_TILE_TISSUE, TileCheck, TileScores
from breastpath.inference.verdict import Verdict
from breastpath.slide.heatmap import slide_stats, write_slide_outputs
from breastpath.slide.reader import SlideReader, open_slide
from breastpath.slide.tile_check import dark_background
from breastpath.slide.tiling import (
    Resolution,
    TileGrid,
    make_grid,
    resolve_resolution,
    score_grid,
)
from breastpath.slide.tissue import TissueMask, detect_tissue

if TYPE_CHECKING:
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.stages import StageClock

#: Apparent resolution of the IDC patches, microns per pixel: slides scanned at 40x (about
#: 0.25 µm/px) and downsampled 16:1 to 2.5x (Janowczyk & Madabhushi 2016, use case 6).
IDC_MPP = 4.0
#: Relative gap between the tile scale and the model's scale above which a note is made.
SCALE_TOLERANCE = 0.25


@dataclass
class SlideResult:
    """What :func:`analyze_slide` found and wrote: the verdict of the one verdict rule (label
    ``not assessed`` when no tile passed the checks), the grid, the mask and the tile scores."""

    verdict: Verdict
    grid: TileGrid
    tissue: TissueMask
    scores: TileScores
    info: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def probabilities(self):
        """Per kept tile, NaN where skipped."""
        return self.scores.probabilities


def model_mpp(predictor: Predictor) -> float | None:
    """Microns per pixel the model was trained at: its checkpoint's ``mpp``, else
    :data:`IDC_MPP` for IDC models, else None (unknown)."""
    meta = getattr(predictor, "meta", None)
    if meta is not None and getattr(meta, "mpp", None):
        return float(meta.mpp)
    return IDC_MPP if predictor.describe().get("dataset") == "idc" else None


def choose_resolution(
    reader: SlideReader,
    predictor: Predictor,
    *,
    tile_size: int,
    level: int | None,
    mpp: float | None,
) -> tuple[Resolution, float | None, list[str]]:
    """The tiling resolution for ``predictor`` on ``reader``, the mpp it aims at (None for a
    level read as is) and notes for the user (see the module docstring)."""
    expected = model_mpp(predictor)
    notes: list[str] = []
    name = reader.path.name
    if level is None and mpp is None:
        if expected is None:
            level = 0
            notes.append("the model does not state its training scale; tiles are level 0 as is")
        elif reader.mpp is None:
            raise SlideError(
                f"{name}: the slide records no microns per pixel and the model expects tiles "
                f"at {expected:g} µm/px; give --slide-mpp (the scan's level-0 µm/px, about "
                "0.25 at 40x, 0.5 at 20x) or --level to tile a pyramid level as it is"
            )
        else:
            mpp = expected
    if mpp is not None and reader.mpp is None:
        raise SlideError(
            f"{name}: the slide does not record its mpp; give --slide-mpp (its level-0 µm/px) "
            "or use --level"
        )
    resolution = resolve_resolution(reader, tile_size=tile_size, level=level, mpp=mpp)
    if reader.mpp is None:
        notes.append(
            f"the slide records no microns per pixel: level {resolution.level} tiles are at an "
            "unknown scale"
        )
    elif expected is not None and resolution.mpp is not None:
        gap = abs(resolution.mpp / expected - 1.0)
        if gap > SCALE_TOLERANCE:
            notes.append(
                f"tiles are at {resolution.mpp:.3g} µm/px but the model was trained at "
                f"{expected:g} µm/px"
            )
    return resolution, mpp, notes


def _open(path: Any, backend: str, slide_mpp: float | None) -> SlideReader:
    reader = open_slide(path, backend=backend)
    if slide_mpp is not None:
        reader.set_mpp(slide_mpp, source="--slide-mpp")
    return reader


@dataclass
class PreparedSlide:
    """An open slide with its tiling resolution, tissue mask and grid: everything
    :func:`analyze_slide` does before the first tile is read (:func:`prepare_slide`), so a
    cohort can prepare the next slide while the model scores this one. Close it (or use it in
    a ``with`` block) when done; :func:`score_prepared` does not close it."""

    reader: SlideReader
    resolution: Resolution
    target_mpp: float | None
    notes: list[str]
    tissue: TissueMask
    grid: TileGrid
    requested_mpp: float | None
    min_tissue: float
    tissue_s: float

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> PreparedSlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_slide(
    reader: SlideReader,
    predictor: Predictor,
    *,
    tile_size: int | None = None,
    level: int | None = None,
    mpp: float | None = None,
    min_tissue: float = MIN_TILE_TISSUE,
    tissue_method: str = "saturation",
    thumbnail_size: int = 2048,
    clock: StageClock | None = None,
) -> PreparedSlide:
    """Choose the resolution, find tissue and lay the grid of an open slide (options as in
    :func:`analyze_slide`); the returned slide owns ``reader``. Raises
    :class:`~breastpath.errors.NoTissueError` when no tile has enough tissue."""
    started = time.perf_counter()
    with timed(clock, "open_and_mask"):
        size = tile_size or int(predictor.input_size[0])
        resolution, target, notes = choose_resolution(
            reader, predictor, tile_size=size, level=level, mpp=mpp
        )
        tissue = detect_tissue(reader, max_size=thumbnail_size, method=tissue_method)
        grid = make_grid(reader, tissue, resolution=resolution, min_tissue=min_tissue)
    return PreparedSlide(
        reader=reader,
        resolution=resolution,
        target_mpp=target,
        notes=notes,
        tissue=tissue,
        grid=grid,
        requested_mpp=mpp,
        min_tissue=min_tissue,
        tissue_s=time.perf_counter() - started,
    )


def analyze_slide(
    path: str | Path | list[str | Path],
    predictor: Predictor,
    *,
    out_dir: str | Path | None = None,
    tile_size: int | None = None,
    level: int | None = None,
    mpp: float | None = None,
    slide_mpp: float | None = None,
    threshold: float | None = None,
    top_k: int = 20,
    min_tissue: float = MIN_TILE_TISSUE,
    tissue_method: str = "saturation",
    thumbnail_size: int = 2048,
    batch_size: int = 256,
    workers: int = 2,
    backend: str = "auto",
    on_grid: Callable[[TileGrid], None] | None = None,
    progress: Callable[[int], None] | None = None,
    clock: StageClock | None = None,
) -> SlideResult:
    """Score the tissue of a whole-slide image tile by tile.

    Parameters
    ----------
    path
        Slide file, DICOM folder or list of ``.dcm`` files (see
        :func:`breastpath.slide.reader.open_slide`).
    predictor
        Model used to score tiles.
    out_dir
        Write ``heatmap.png``, ``tissue.png``, ``tiles.csv``, ``tiles.geojson`` and
        ``slide.json`` here (optional).
    tile_size
        Tile side given to the model; default the model's input size.
    level, mpp
        Read tiles from this pyramid level, or at this resolution (microns per pixel); with
        neither, at the model's scale (see the module docstring).
    slide_mpp
        The slide's level-0 microns per pixel, when the file lacks it (or to override it).
    threshold
        Tile threshold of the verdict rule; default the model's.
    top_k
        ``k`` of the top-k mean reported beside the verdict (over the scored tiles only).
    min_tissue
        Read tiles with at least this share of tissue on the mask, and score those with at
        least this share of tissue pixels (:class:`~breastpath.inference.tiles.TileCheck`).
    on_grid
        Called with the tile grid before scoring starts (to size a progress bar).
    progress
        Called with the number of tiles checked after each batch.
    clock
        Counts CPU seconds per stage (:class:`~breastpath.inference.stages.StageClock`).

    Examples
    --------
    >>> from breastpath.inference.predictor import Predictor
    >>> result = analyze_slide("slide.svs", Predictor.from_checkpoint("default"),
    ...                        out_dir="out")  # doctest: +SKIP
    >>> result.verdict.label, result.scores.counts()  # doctest: +SKIP
    ('IDC present', {'scored': 812, 'background': 40})
    """
    with timed(clock, "open_and_mask"):
        reader = _open(path, backend, slide_mpp)
    with reader:
        prepared = prepare_slide(
            reader, predictor, tile_size=tile_size, level=level, mpp=mpp,
            min_tissue=min_tissue, tissue_method=tissue_method, thumbnail_size=thumbnail_size,
            clock=clock,
        )  # fmt: skip
        return score_prepared(
            prepared, predictor, out_dir=out_dir, threshold=threshold, top_k=top_k,
            batch_size=batch_size, workers=workers, on_grid=on_grid, progress=progress,
            clock=clock,
        )  # fmt: skip


def score_prepared(
    prepared: PreparedSlide,
    predictor: Predictor,
    *,
    out_dir: str | Path | None = None,
    threshold: float | None = None,
    top_k: int = 20,
    batch_size: int = 256,
    workers: int = 2,
    on_grid: Callable[[TileGrid], None] | None = None,
    progress: Callable[[int], None] | None = None,
    clock: StageClock | None = None,
) -> SlideResult:
    """Read, check and score the tiles of a :func:`prepare_slide` slide, apply the verdict
    rule and write the outputs (the second half of :func:`analyze_slide`)."""
    grid, tissue = prepared.grid, prepared.tissue
    if on_grid is not None:
        on_grid(grid)
    scoring = time.perf_counter()
    scores = score_grid(
        prepared.reader, grid, predictor, check=TileCheck(min_tissue=prepared.min_tissue),
        batch_size=batch_size, workers=workers, progress=progress, clock=clock,
    )  # fmt: skip
    score_s = time.perf_counter() - scoring
    dark = dark_background(tissue.thumbnail)
    notes = prepared.notes + quality_notes(scores, dark=dark)
    verdict = predictor.verdict_rule(threshold=threshold).apply(scores.probabilities)
    timing = {
        "tissue_and_grid_s": round(prepared.tissue_s, 3),
        "scoring_s": round(score_s, 3),
        "tiles_per_s": round(len(grid) / score_s, 1) if score_s > 0 else None,
    }
    info = _info(
        slide=prepared.reader.describe(), predictor=predictor, resolution=prepared.resolution,
        grid=grid, tissue=tissue, scores=scores, requested_mpp=prepared.requested_mpp,
        target_mpp=prepared.target_mpp, min_tissue=prepared.min_tissue, timing=timing,
        dark=dark,
    )  # fmt: skip
    info["verdict"] = verdict.to_dict()
    info["stats"] = slide_stats(scores.probabilities, top_k=top_k)
    info["notes"] = notes
    result = SlideResult(verdict, grid, tissue, scores, info, notes)
    if out_dir is not None:
        result.paths = write_slide_outputs(
            out_dir, tissue=tissue, grid=grid, scores=scores, verdict=verdict, info=info
        )
    return result


def quality_notes(scores: TileScores, *, dark: bool) -> list[str]:
    """Notes on a slide that is not (all) brightfield H&E tissue."""
    notes = []
    if dark:
        notes.append(
            "the slide's background is near-black: a fluorescence or dark-field scan, not "
            "brightfield H&E"
        )
    counts = scores.counts()
    gate = sum(counts.get(r, 0) for r in ("not_he", "dark", "no_texture"))
    if gate > len(scores.skipped) / 2:
        notes.append(
            "most tissue tiles failed the H&E quality gate (dark, not H&E colours or no tissue "
            "texture)"
        )
    if not scores.scored.any():
        skipped = ", ".join(f"{n} {r}" for r, n in counts.items() if r != "scored")
        notes.append(f"not scored: no tissue tile passed the tile checks ({skipped})")
    return notes


def _info(
    *,
    slide: dict[str, Any],
    predictor: Predictor,
    resolution: Resolution,
    grid: TileGrid,
    tissue: TissueMask,
    scores: TileScores,
    requested_mpp: float | None,
    target_mpp: float | None,
    min_tissue: float,
    timing: dict[str, Any],
    dark: bool,
) -> dict[str, Any]:
    """The ``slide.json`` body beside the verdict."""
    counts = scores.counts()
    return {
        "slide": slide,
        "model": {**predictor.describe(), "mpp": model_mpp(predictor)},
        "tiling": {
            "level": resolution.level,
            "read_size": resolution.read_size,
            "tile_size": resolution.tile_size,
            "step_level0": resolution.step,
            "mpp": resolution.mpp,
            "requested_mpp": requested_mpp,
            "target_mpp": target_mpp,
            "grid": [grid.n_rows, grid.n_cols],
            "tiles_read": len(grid),
            "tiles_scored": counts["scored"],
            "tiles_skipped": {
                "mask": len(grid.low_rows),
                **{r: n for r, n in counts.items() if r != "scored"},
            },
            "min_tissue": min_tissue,
        },
        "tissue": {
            "method": tissue.method,
            "threshold": tissue.threshold,
            "fraction_of_thumbnail": tissue.fraction,
            "thumbnail": list(tissue.thumbnail.shape[:2]),
        },
        "quality": {"dark_background": dark},
        "timing": timing,
    }
