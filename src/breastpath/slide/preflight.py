"""Before a slide is scored: open it, choose the tiling resolution and count the grid.

:func:`preflight` refuses a grid of more than ``max_tiles`` tiles (default
:data:`MAX_TILES`) before any tile is read, so a mistaken ``--mpp 0.000001`` stops at once with
a line that names ``--max-tiles`` instead of starting millions of tiles. The count is the whole
grid at the chosen level (``rows x cols``), known from the level size and the read size alone,
before the tissue mask is made: it bounds the tiles read and the work of building the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from breastpath.errors import SlideError
from breastpath.slide.reader import open_slide

if TYPE_CHECKING:
    from breastpath.inference.predictor import Predictor
    from breastpath.slide.reader import SlideReader
    from breastpath.slide.tiling import Resolution

#: Default limit on the tiles of one slide's grid (``--max-tiles``). A 100,000 x 100,000 slide
#: at 0.25 µm/px tiled at the IDC models' 4 µm/px with 50-pixel tiles is 15,625 tiles; at level
#: 0 with 224-pixel tiles 199,809.
MAX_TILES = 1_000_000


@dataclass(frozen=True)
class Preflight:
    """What a slide is before scoring: its reader, scale and the size of its tile grid."""

    backend: str
    mpp: float | None
    mpp_source: str | None
    level: int
    tile_mpp: float | None
    grid_tiles: int

    def to_row(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "mpp": self.mpp,
            "level": self.level,
            "tile_mpp": None if self.tile_mpp is None else round(self.tile_mpp, 4),
        }


def grid_size(reader: SlideReader, resolution: Resolution) -> tuple[int, int]:
    """``(rows, cols)`` of the tile grid at ``resolution`` (as :func:`make_grid` lays it)."""
    level = reader.levels[resolution.level]
    return -(-level.height // resolution.read_size), -(-level.width // resolution.read_size)


def preflight(
    path: str | Path | list[Path],
    predictor: Predictor,
    *,
    backend: str = "auto",
    slide_mpp: float | None = None,
    tile_size: int | None = None,
    level: int | None = None,
    mpp: float | None = None,
    max_tiles: int = MAX_TILES,
) -> Preflight:
    """Open ``path``, choose its resolution as :func:`~breastpath.slide.analyze.analyze_slide`
    does and check the size of its grid.

    Raises
    ------
    SlideError
        The slide cannot be opened, has no usable resolution (see
        :func:`~breastpath.slide.analyze.choose_resolution`), or its grid has more than
        ``max_tiles`` tiles.

    Examples
    --------
    >>> preflight("CMU-1-Small-Region.svs", predictor, mpp=0.000001)  # doctest: +SKIP
    Traceback (most recent call last):
    SlideError: CMU-1-Small-Region.svs: a grid of 6,586,740 tiles (2967 x 2220 at level 0, ...
    """
    if isinstance(path, (str, Path)) and Path(path).is_dir():
        check_one_series(Path(path))
    with open_slide(path, backend=backend) as reader:
        if slide_mpp is not None:
            reader.set_mpp(slide_mpp, source="--slide-mpp")
        return check_reader(
            reader, predictor, tile_size=tile_size, level=level, mpp=mpp, max_tiles=max_tiles
        )


def check_reader(
    reader: SlideReader,
    predictor: Predictor,
    *,
    tile_size: int | None = None,
    level: int | None = None,
    mpp: float | None = None,
    max_tiles: int = MAX_TILES,
) -> Preflight:
    """:func:`preflight` of a slide already open (its ``--slide-mpp`` already set)."""
    from breastpath.slide.analyze import choose_resolution

    size = tile_size or int(predictor.input_size[0])
    resolution, _, _ = choose_resolution(reader, predictor, tile_size=size, level=level, mpp=mpp)
    rows, cols = grid_size(reader, resolution)
    check_tile_count(rows, cols, resolution, max_tiles=max_tiles, name=reader.path.name)
    return Preflight(
        backend=reader.backend,
        mpp=reader.mpp,
        mpp_source=reader.mpp_source,
        level=resolution.level,
        tile_mpp=resolution.mpp,
        grid_tiles=rows * cols,
    )


def check_one_series(folder: Path) -> None:
    """Raise :class:`SlideError` when a DICOM folder holds more than one series (wsidicom would
    open one of them without a word)."""
    from breastpath.slide.dicom_reader import _series_uid

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())
    series = {uid for uid in map(_series_uid, files) if uid is not None}
    if len(series) > 1:
        raise SlideError(
            f"{folder.name}: a DICOM folder with {len(series)} series; give one series per "
            "folder, or the .dcm files of one series"
        )


def check_tile_count(
    rows: int, cols: int, resolution: Resolution, *, max_tiles: int, name: str
) -> None:
    """Raise :class:`SlideError` naming ``--max-tiles`` when ``rows * cols > max_tiles``.

    Examples
    --------
    >>> from breastpath.slide.tiling import Resolution
    >>> res = Resolution(level=0, read_size=1, tile_size=50, step=1.0, mpp=1e-5)
    >>> check_tile_count(2967, 2220, res, max_tiles=1_000_000, name="a.svs")
    Traceback (most recent call last):
    ...
    breastpath.errors.SlideError: a.svs: a grid of 6,586,740 tiles (2967 x 2220 at level 0, 1e-05 µm/px), more than --max-tiles 1,000,000; tile at a coarser --mpp or --level, or raise --max-tiles
    """  # noqa: E501
    total = rows * cols
    if total <= max_tiles:
        return
    scale = "" if resolution.mpp is None else f", {resolution.mpp:.3g} µm/px"
    raise SlideError(
        f"{name}: a grid of {total:,} tiles ({rows} x {cols} at level {resolution.level}{scale}), "
        f"more than --max-tiles {max_tiles:,}; tile at a coarser --mpp or --level, or raise "
        "--max-tiles"
    )
