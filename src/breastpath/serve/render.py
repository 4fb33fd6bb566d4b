"""Pictures for the page: Grad-CAM overlays, tile heatmaps, PNG as base64.

Small patches are enlarged (nearest neighbour, so pixels stay visible) and large images shrunk,
so that every picture is between ``MIN_SIDE`` and ``MAX_SIDE`` pixels on its longer side. Colour
mapping and blending are :mod:`breastpath.render`'s (shared with the slide heatmaps).
"""

from __future__ import annotations

import base64
import io

import numpy as np

from breastpath import render as colormaps

#: Pictures are enlarged to at least this many pixels on their longer side ...
MIN_SIDE = 256
#: ... and shrunk to at most this many.
MAX_SIDE = 512
#: Colour map for probabilities and Grad-CAM (matplotlib's name).
COLORMAP = "inferno"
#: Grey level of a tile not assessed in a tile map, and how much of the image's own brightness
#: shows through it (0: flat grey).
GREY = 170.0
GREY_DETAIL = 0.2


def colorize(values: np.ndarray, name: str = COLORMAP) -> np.ndarray:
    """Values in ``[0, 1]``, any shape -> RGB uint8 with one more axis."""
    return colormaps.colorize(values, cmap=name)


def display_size(height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` scaled so the longer side is within ``[MIN_SIDE, MAX_SIDE]``."""
    longest = max(height, width)
    scale = 1.0
    if longest < MIN_SIDE:
        scale = max(1, MIN_SIDE // longest)
    elif longest > MAX_SIDE:
        scale = MAX_SIDE / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: np.ndarray, size: tuple[int, int], *, smooth: bool) -> np.ndarray:
    """Resize uint8 RGB or float ``(H, W)`` to ``size = (height, width)``."""
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return image
    height, width = size
    enlarging = height >= image.shape[0]
    method = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    if not enlarging and not smooth:
        method = Image.Resampling.BOX
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(image).resize((width, height), method))
    plane = Image.fromarray(image.astype(np.float32), mode="F")
    return np.asarray(plane.resize((width, height), method), dtype=np.float32)


def for_display(image: np.ndarray) -> np.ndarray:
    """The image at display size (pixels kept sharp when enlarged)."""
    return resize(image, display_size(*image.shape[:2]), smooth=False)


def overlay(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Blend a ``[0, 1]`` map over an RGB image at display size; weak evidence stays clear.

    Examples
    --------
    >>> out = overlay(np.full((50, 50, 3), 200, np.uint8), np.zeros((50, 50)))
    >>> out.shape, int(out[0, 0, 0])
    ((250, 250, 3), 200)
    """
    size = display_size(*image.shape[:2])
    base = resize(image, size, smooth=False)
    heat = np.clip(resize(np.nan_to_num(heat).astype(np.float32), size, smooth=True), 0.0, 1.0)
    return colormaps.blend(base, heat, alpha=alpha * np.sqrt(heat), cmap=COLORMAP)


def tile_heatmap(
    image: np.ndarray,
    scores: np.ndarray,
    tissue: np.ndarray,
    tile_size: tuple[int, int],
    *,
    alpha: float = 0.55,
) -> np.ndarray:
    """Tile probabilities ``(rows, cols)`` as coloured blocks over the image at display size.

    Tiles not assessed (``tissue`` false: background, dark, not H&E, no texture) are plain grey
    (:data:`GREY`, the image's detail faint in it, no colour left), so that they read as grey
    even on a photo; white lines mark the tile edges.

    Examples
    --------
    >>> photo = np.zeros((50, 100, 3), np.uint8); photo[..., 1] = 200  # bright green
    >>> out = tile_heatmap(photo, np.array([[0.9, 0.9]]), np.array([[True, False]]), (50, 50))
    >>> [int(c) for c in out[50, 150]]  # not assessed: grey (R = G = B)
    [159, 159, 159]
    >>> len(set(out[50, 50].tolist())) > 1  # assessed: coloured by its probability
    True
    """
    height, width = display_size(*image.shape[:2])
    base = resize(image, (height, width), smooth=False).astype(np.float32)
    rows, cols = scores.shape
    # display pixel -> image pixel -> tile index
    row_of = (np.arange(height) * image.shape[0] / height // tile_size[0]).astype(int)
    col_of = (np.arange(width) * image.shape[1] / width // tile_size[1]).astype(int)
    row_of, col_of = np.minimum(row_of, rows - 1), np.minimum(col_of, cols - 1)
    block = scores[row_of[:, None], col_of[None, :]]
    on_tissue = tissue[row_of[:, None], col_of[None, :]]
    colour = colorize(block).astype(np.float32)
    luma = base @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = GREY + (luma - GREY) * GREY_DETAIL
    out = np.where(on_tissue[..., None], base * (1 - alpha) + colour * alpha, grey[..., None])
    out[np.flatnonzero(np.diff(row_of)) + 1, :] = 255.0
    out[:, np.flatnonzero(np.diff(col_of)) + 1] = 255.0
    return np.clip(out, 0, 255).round().astype(np.uint8)


def png_base64(image: np.ndarray) -> str:
    """PNG bytes of an RGB uint8 image, base64-encoded (ASCII)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False, compress_level=6)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
