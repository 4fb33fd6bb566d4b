"""Slide statistics, heatmap pictures and the files ``breastpath slide`` writes.

A slide's verdict comes from the one verdict rule (:mod:`breastpath.inference.verdict`); the
statistics here (top-k mean, mean, maximum) are reported beside it and decide nothing.

The rendering helpers here (:func:`paint_grid`, :func:`overlay`, :func:`side_by_side`) are
shared with the IDC mosaics in :mod:`breastpath.slide.mosaic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from breastpath import render as colormaps
from breastpath.errors import SlideError
from breastpath.io import atomic_open, write_csv, write_json

if TYPE_CHECKING:
    from breastpath.inference.tiles import TileScores
    from breastpath.inference.verdict import Verdict
    from breastpath.slide.tiling import TileGrid
    from breastpath.slide.tissue import TissueMask

COLORMAP = "jet"
TILE_FIELDS = [
    "tile", "row", "col", "x", "y", "size", "level", "tissue", "probability", "skipped",
]  # fmt: skip
#: Colour of the tissue tiles that were read but skipped by the tile checks.
SKIPPED_COLOR = (128, 128, 128)


def slide_stats(probabilities: np.ndarray, *, top_k: int = 20) -> dict[str, Any] | None:
    """Mean, maximum and top-k mean of the scored tiles' probabilities (None when none was
    scored); descriptive only: the verdict is the verdict rule's.

    Examples
    --------
    >>> slide_stats(np.array([0.1, 0.9, 0.8, np.nan]), top_k=2)
    {'tiles': 3, 'mean': 0.6, 'max': 0.9, 'top_k': 2, 'top_k_mean': 0.85}
    """
    p = np.asarray(probabilities, dtype=np.float64)
    p = p[np.isfinite(p)]
    if top_k < 1:
        raise SlideError(f"top-k must be at least 1, got {top_k}")
    if p.size == 0:
        return None
    k = min(top_k, p.size)
    return {
        "tiles": int(p.size),
        "mean": round(float(p.mean()), 6),
        "max": round(float(p.max()), 6),
        "top_k": k,
        "top_k_mean": round(float(np.sort(p)[-k:].mean()), 6),
    }


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
    scores: TileScores,
    verdict: Verdict,
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
    unread = f", {len(grid.low_rows)} below the mask not read" if len(grid.low_rows) else ""
    # the panel title is short (it must fit half the figure); the counts go under the colour
    # bar, which spans the whole figure
    if verdict.positive is None:
        title = "nothing scored"
        counts = f"all {n_skipped} tissue tiles failed the tile checks (gray){unread}"
    else:
        title = f"{verdict.label}, extent {verdict.extent:.1%}"
        counts = f"{verdict.tiles_assessed} scored, {n_skipped} failed the checks in gray{unread}"
    figure = side_by_side(
        [
            (outline(thumb, tissue.mask), "thumbnail, tissue outlined"),
            (shade(overlay(thumb, values, alpha=alpha), gray), title),
        ]
    )
    legend = legend_bar(
        figure.shape[1],
        label=f"tile probability of cancer ({counts})",
        threshold=verdict.threshold,
    )
    return np.concatenate([figure, legend])


def write_slide_outputs(
    out_dir: str | Path,
    *,
    tissue: TissueMask,
    grid: TileGrid,
    scores: TileScores,
    verdict: Verdict,
    info: dict[str, Any],
    alpha: float = 0.5,
) -> dict[str, Path]:
    """Write ``heatmap.png``, ``tissue.png``, ``tiles.csv``, ``tiles.geojson`` and
    ``slide.json`` into ``out_dir``.

    ``tiles.csv`` lists every tile read or touching the tissue mask, with its probability or
    the reason it was skipped; ``tiles.geojson`` holds the same tiles as QuPath detections
    (:mod:`breastpath.slide.geojson`); ``slide.json`` holds ``info``, whose ``verdict`` is the
    verdict rule's (label ``not assessed`` when nothing was scored) and ``stats`` the tile
    statistics beside it.
    """
    from breastpath.slide.geojson import class_names_of, write_geojson

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure = heatmap_figure(tissue, grid, scores, verdict, alpha=alpha)
    paths = {
        "heatmap": save_png(out / "heatmap.png", figure),
        "tissue": save_png(out / "tissue.png", tissue.mask.astype(np.uint8) * 255),
        "tiles": out / "tiles.csv",
        "geojson": out / "tiles.geojson",
        "summary": out / "slide.json",
    }
    records = grid.records(scores.probabilities, scores.skipped)
    write_csv(paths["tiles"], records, TILE_FIELDS)
    write_geojson(
        paths["geojson"],
        records,
        threshold=verdict.threshold,
        classes=class_names_of(info.get("model") or {}),
    )
    body = {"rule": verdict.rule, **info}
    write_json(paths["summary"], body)
    return paths
