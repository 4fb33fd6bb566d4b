"""Slide-level score, heatmap pictures and the files ``breastpath slide`` writes.

Slide score
-----------
The **headline** is the **top-k mean**: the mean probability of the ``k`` highest-scoring
tissue tiles (``k = 20`` by default, fewer when the slide has fewer tiles). It does not shrink
when a small tumour sits in a large piece of tissue, and it is defined for every slide. Also
reported: the mean probability of the tiles at or above ``threshold`` (None when no tile is),
the share of tiles at or above it, and the mean and maximum tile probability.

The rendering helpers here (:func:`paint_grid`, :func:`overlay`, :func:`side_by_side`) are
shared with the IDC mosaics in :mod:`breastpath.slide.mosaic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from breastpath import render as colormaps
from breastpath.errors import SlideError
from breastpath.io import atomic_open, write_csv, write_json

if TYPE_CHECKING:
    from breastpath.slide.tiling import GridScores, TileGrid
    from breastpath.slide.tissue import TissueMask

HEADLINE = "top_k_mean"
COLORMAP = "jet"
TILE_FIELDS = [
    "tile", "row", "col", "x", "y", "size", "level", "tissue", "probability", "skipped",
]  # fmt: skip
#: Colour of the tissue tiles that were read but skipped by the tile checks.
SKIPPED_COLOR = (128, 128, 128)


@dataclass(frozen=True)
class SlideScore:
    """Slide-level summary of tile probabilities; ``top_k_mean`` is the headline."""

    top_k_mean: float
    top_k: int
    threshold: float
    mean_above_threshold: float | None
    fraction_above_threshold: float
    tiles: int
    tiles_above_threshold: int
    mean: float
    max: float
    headline: str = HEADLINE

    @property
    def positive(self) -> bool:
        """True when the headline score reaches the threshold."""
        return self.top_k_mean >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "positive": self.positive}


def slide_score(probabilities: np.ndarray, *, threshold: float, top_k: int = 20) -> SlideScore:
    """Summarise tile probabilities into a :class:`SlideScore`.

    Examples
    --------
    >>> s = slide_score(np.array([0.1, 0.9, 0.8, 0.2]), threshold=0.5, top_k=2)
    >>> round(s.top_k_mean, 2), round(s.mean_above_threshold, 2), s.fraction_above_threshold
    (0.85, 0.85, 0.5)
    """
    p = np.asarray(probabilities, dtype=np.float64)
    p = p[np.isfinite(p)]
    if p.size == 0:
        raise SlideError("no scored tiles")
    if not 0.0 <= threshold <= 1.0:
        raise SlideError(f"threshold must be in [0, 1], got {threshold}")
    if top_k < 1:
        raise SlideError(f"top-k must be at least 1, got {top_k}")
    k = min(top_k, p.size)
    above = p >= threshold
    return SlideScore(
        top_k_mean=float(np.sort(p)[-k:].mean()),
        top_k=k,
        threshold=float(threshold),
        mean_above_threshold=float(p[above].mean()) if above.any() else None,
        fraction_above_threshold=float(above.mean()),
        tiles=int(p.size),
        tiles_above_threshold=int(above.sum()),
        mean=float(p.mean()),
        max=float(p.max()),
    )


def probability_grid(grid: TileGrid, probabilities: np.ndarray) -> np.ndarray:
    """``(n_rows, n_cols)`` float grid of tile probabilities; NaN where nothing was scored."""
    values = np.full((grid.n_rows, grid.n_cols), np.nan)
    values[grid.rows, grid.cols] = probabilities
    return values


def paint_grid(
    values: np.ndarray, *, cell: tuple[float, float], shape: tuple[int, int]
) -> np.ndarray:
    """Draw a grid of values onto an image of ``shape`` where a cell is ``cell = (w, h)`` pixels.

    Cells at least one pixel wide are painted (nearest); smaller cells are averaged into the
    pixel holding their centre. NaN cells are transparent; the result is NaN where no cell is.
    """
    height, width = shape
    cw, ch = cell
    if cw >= 1 and ch >= 1:
        cols = np.minimum((np.arange(width) / cw).astype(np.int64), values.shape[1] - 1)
        rows = np.minimum((np.arange(height) / ch).astype(np.int64), values.shape[0] - 1)
        return values[rows[:, None], cols[None, :]]
    r, c = np.nonzero(np.isfinite(values))
    py = np.minimum(((r + 0.5) * ch).astype(np.int64), height - 1)
    px = np.minimum(((c + 0.5) * cw).astype(np.int64), width - 1)
    total = np.zeros(shape)
    count = np.zeros(shape)
    np.add.at(total, (py, px), values[r, c])
    np.add.at(count, (py, px), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def colorize(values: np.ndarray, *, cmap: str = COLORMAP) -> np.ndarray:
    """Values in [0, 1] -> RGBA uint8 with a matplotlib colormap; NaN is fully transparent."""
    return colormaps.colorize_rgba(values, cmap=cmap)


def overlay(
    base: np.ndarray, values: np.ndarray, *, alpha: float = 0.5, cmap: str = COLORMAP
) -> np.ndarray:
    """Blend a colour-mapped value image (same height and width as ``base``) over ``base``;
    NaN values leave ``base`` as it is (:func:`breastpath.render.blend`)."""
    return colormaps.blend(base, values, alpha=alpha, cmap=cmap)


def outline(base: np.ndarray, mask: np.ndarray, *, color=(0, 160, 0), width: int = 2) -> np.ndarray:
    """Draw the border of ``mask`` on ``base`` (a copy)."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    out = base.copy()
    out[mask & ~inner] = color
    return out


def _font(size: int):
    """Pillow's built-in font at ``size`` pixels (the small bitmap font on old Pillow)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def legend_bar(width: int, *, label: str, threshold: float | None = None) -> np.ndarray:
    """A horizontal colour bar from 0 to 1 with a caption and an optional threshold tick."""
    from PIL import Image, ImageDraw

    text = max(12, min(32, width // 100))
    bar_w = max(64, min(width - 2 * text, max(600, width // 3)))
    bar_h = text
    ramp = colorize(np.tile(np.linspace(0, 1, bar_w), (bar_h, 1)))[..., :3]
    image = Image.new("RGB", (width, bar_h + 2 * text + 8), "white")
    image.paste(Image.fromarray(ramp), (text, 4))
    draw = ImageDraw.Draw(image)
    font = _font(text)
    y = bar_h + 8
    draw.text((text, y), "0", fill="black", font=font)
    draw.text((text + bar_w - text // 2, y), "1", fill="black", font=font)
    draw.text((text + bar_w + text, 4), label, fill="black", font=font)
    if threshold is not None:
        x = text + round(threshold * (bar_w - 1))
        draw.line([(x, 1), (x, bar_h + 6)], fill="black", width=max(2, text // 8))
        draw.text((x - text, y), f"{threshold:.2f}", fill="black", font=font)
    return np.asarray(image)


def side_by_side(
    panels: Sequence[tuple[np.ndarray, str]],
    *,
    max_side: int = 2048,
    gap: int = 10,
) -> np.ndarray:
    """Panels (image, title) in a row, each shrunk to fit ``max_side`` (RGB uint8)."""
    from PIL import Image, ImageDraw

    scaled = []
    for image, title in panels:
        picture = Image.fromarray(image)
        factor = min(1.0, max_side / max(picture.size))
        if factor < 1.0:
            size = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
            picture = picture.resize(size, Image.Resampling.BOX)
        scaled.append((picture, title))
    width = sum(p.width for p, _ in scaled) + gap * (len(scaled) + 1)
    text = max(12, min(32, width // 100))
    top = text + 2 * gap
    height = max(p.height for p, _ in scaled) + top + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(text)
    x = gap
    for picture, title in scaled:
        draw.text((x, gap), title, fill="black", font=font)
        canvas.paste(picture, (x, top))
        x += picture.width + gap
    return np.asarray(canvas)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB array as PNG, atomically."""
    from PIL import Image

    with atomic_open(path) as handle:
        Image.fromarray(image).save(handle, format="PNG")
    return Path(path)


def shade(base: np.ndarray, cells: np.ndarray, *, color=SKIPPED_COLOR, alpha=0.6) -> np.ndarray:
    """Blend ``color`` over ``base`` where ``cells`` (painted, NaN elsewhere) is finite."""
    where = np.isfinite(cells)
    out = base.copy()
    blended = base[where].astype(np.float32) * (1 - alpha) + np.float32(alpha) * np.array(color)
    out[where] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return out


def heatmap_figure(
    tissue: TissueMask,
    grid: TileGrid,
    scores: GridScores,
    score: SlideScore | None,
    *,
    alpha: float = 0.5,
) -> np.ndarray:
    """Thumbnail with the tissue outline beside the probability overlay, skipped tissue tiles
    in gray, and a colour bar marking the threshold."""
    thumb = tissue.thumbnail
    sx, sy = tissue.scale
    step = grid.resolution.step
    cell, shape = (step / sx, step / sy), thumb.shape[:2]
    values = paint_grid(probability_grid(grid, scores.probabilities), cell=cell, shape=shape)
    skipped = np.where(scores.scored, np.nan, 1.0)
    gray = paint_grid(probability_grid(grid, skipped), cell=cell, shape=shape)
    n_skipped = int((~scores.scored).sum())
    if score is None:
        title = f"nothing scored: all {n_skipped} tissue tiles failed the tile checks (gray)"
    else:
        title = (
            f"probability of cancer per tile ({score.tiles} scored, {n_skipped} skipped in "
            f"gray); slide score {score.top_k_mean:.3f} (top-{score.top_k} mean)"
        )
    figure = side_by_side(
        [
            (outline(thumb, tissue.mask), "thumbnail, tissue outlined"),
            (shade(overlay(thumb, values, alpha=alpha), gray), title),
        ]
    )
    threshold = None if score is None else score.threshold
    legend = legend_bar(figure.shape[1], label="tile probability of cancer", threshold=threshold)
    return np.concatenate([figure, legend])


def write_slide_outputs(
    out_dir: str | Path,
    *,
    tissue: TissueMask,
    grid: TileGrid,
    scores: GridScores,
    score: SlideScore | None,
    info: dict[str, Any],
    alpha: float = 0.5,
) -> dict[str, Path]:
    """Write ``heatmap.png``, ``tissue.png``, ``tiles.csv``, ``tiles.geojson`` and
    ``slide.json`` into ``out_dir``.

    ``tiles.csv`` lists every tile read or touching the tissue mask, with its probability or
    the reason it was skipped; ``tiles.geojson`` holds the same tiles as QuPath detections
    (:mod:`breastpath.slide.geojson`); ``slide.json`` holds ``score`` (null when nothing was
    scored) and ``info``.
    """
    from breastpath.slide.geojson import write_geojson

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure = heatmap_figure(tissue, grid, scores, score, alpha=alpha)
    paths = {
        "heatmap": save_png(out / "heatmap.png", figure),
        "tissue": save_png(out / "tissue.png", tissue.mask.astype(np.uint8) * 255),
        "tiles": out / "tiles.csv",
        "geojson": out / "tiles.geojson",
        "summary": out / "slide.json",
    }
    records = grid.records(scores.probabilities, scores.skipped)
    write_csv(paths["tiles"], records, TILE_FIELDS)
    write_geojson(paths["geojson"], records, threshold=None if score is None else score.threshold)
    headline = (
        "slide score = mean probability of the top k scored tissue tiles (top-k mean; the "
        "headline); tiles skipped by the mask or the tile checks are never scored"
    )
    body = {"score": None if score is None else score.to_dict(), "rule": headline, **info}
    write_json(paths["summary"], body)
    return paths
