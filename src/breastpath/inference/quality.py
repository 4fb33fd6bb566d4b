"""The input-quality gate: is this image H&E tissue at all? Only what passes gets a cancer label.

For every image or tile the gate reports ``tissue_fraction``, ``is_tissue``, ``looks_like_he``
and a plain ``reason`` (:class:`Quality`). It runs on the pixels as given (before resizing or
padding), vectorised over a batch of tiles.

Rules, in order (the first that fails is the reason)
----------------------------------------------------
1. **Too dark**: at least ``max_dark_fraction`` of the pixels have luminosity below
   ``min_luminosity`` (a black frame, a fluorescence scan's background, a lens cap).
2. **Background**: less than ``min_tissue_fraction`` of the pixels are tissue by the one tissue
   definition (:mod:`breastpath.tissue`, luminosity in ``[min_luminosity, max_luminosity)``):
   blank glass, white, fat without stroma.
3. **Not H&E**: more than ``max_foreign_fraction`` of the tissue pixels are *coloured outside
   the haematoxylin/eosin range*. A pixel's stain colour is the direction of its optical
   density (OD) vector: its chromaticity ``od / od.sum()`` as a hue angle and a chroma (distance
   from neutral grey) in the chromaticity plane. Haematoxylin (blue-purple) and eosin (pink) both
   absorb green most, so H&E pixels have hues in ``hue_range`` (degrees; calibrated on IDC,
   BreakHis and an Aperio scan). A pixel is *foreign* when its chroma is at least
   ``min_chroma`` and its hue lies outside that range, or when one channel's OD exceeds
   ``max_od`` (a saturated colour no stained section transmits, such as a fluorescent nucleus on
   black). Neutral grey pixels count as neither. Photos (skin, fur, sky), fluorescence and
   uniform noise are mostly foreign, and so should IHC be (DAB brown lies outside the range;
   no IHC image was at hand to check); tissue marking ink on an H&E section is foreign only
   where it covers the tissue.
4. **No tissue texture**: tissue has texture at the scale the model sees it; a flat or near-flat
   field or pixel noise has none. Measured on the grey level ``g`` (BT.601 luma, 0-255) of the
   pixels as assessed: ``contrast`` (the standard deviation of ``g``), ``detail`` (the RMS
   difference of horizontal and vertical neighbours, over sqrt(2): equal to ``contrast`` for
   pixel noise, near 0 for a smooth gradient) and ``structure`` (how much of the variance
   survives averaging 2x2 blocks, ``(4 var(block means) / var(g) - 1) / 3``: about 0 for
   independent pixel noise, 1 for a smooth field; real tissue is spatially correlated). An
   image whose contrast is below ``min_contrast`` or whose detail is below ``min_detail`` is
   flat; one whose structure is below ``min_structure`` is noise, and so is a faint one
   (contrast below ``faint_contrast``) whose structure is below ``faint_structure``: what is
   left of noise once an image of it is resized down (the filter correlates neighbours a
   little). Images under 2 pixels in either direction are not measured for structure.

The thresholds are keyword options of :func:`assess`; the defaults below were chosen with
``scripts/calibrate_quality.py`` (its table is in ``docs/reliability.md``).

Examples
--------
>>> import numpy as np
>>> glass = np.full((50, 50, 3), (241, 235, 238), np.uint8)
>>> assess([glass])[0].reason
'blank glass / background'
>>> assess([np.zeros((50, 50, 3), np.uint8)])[0].reason
'too dark / black frame'
>>> assess([np.full((50, 50, 3), (230, 140, 190), np.uint8)])[0].reason  # flat eosin pink
'no tissue texture: a flat field or pixel noise'
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from breastpath.errors import InvalidImageError
from breastpath.tissue import MAX_LUMINOSITY as TISSUE_LUMINOSITY
from breastpath.tissue import luminance, luminance_threshold, od_table

#: Default thresholds (see the module docstring; calibrated by ``scripts/calibrate_quality.py``).
MAX_LUMINOSITY = 0.88
MIN_LUMINOSITY = 0.1
MIN_TISSUE_FRACTION = 0.02
MAX_DARK_FRACTION = 0.9
HUE_RANGE = (70.0, 215.0)
MIN_CHROMA = 0.04
MAX_OD = 3.0
MAX_FOREIGN_FRACTION = 0.6
#: Texture thresholds, in grey levels (0-255) except ``MIN_STRUCTURE`` (see rule 4).
MIN_CONTRAST = 3.0
MIN_DETAIL = 0.5
MIN_STRUCTURE = 0.05
FAINT_CONTRAST = 8.0
FAINT_STRUCTURE = 0.2
#: Images larger than this many pixels are assessed on a regular subsample of this size.
MAX_PIXELS = 512 * 512
#: Batches with more pixels than this are classified through a per-colour lookup table.
TABLE_PIXELS = 1 << 20
#: :class:`ColourTable` classifies this many pixels directly before it fills and uses its table.
TABLE_WARM_PIXELS = 1 << 23
#: Pixel class bits (:func:`pixel_classes`). ``PLAIN_TISSUE``: tissue by the one tissue rule at
#: its default luminosity (:data:`breastpath.tissue.MAX_LUMINOSITY`, no lower bound), the share
#: the tile check (:class:`breastpath.inference.tiles.TileCheck`) asks for beside the gate.
DARK, TISSUE, FOREIGN, PLAIN_TISSUE = 1, 2, 4, 8
#: Tiles per vectorised pass of :func:`assess_batch` (its temporary arrays stay small).
BATCH_TILES = 256

REASON_OK = "ok"
REASON_EMPTY = "empty image"
REASON_DARK = "too dark / black frame"
REASON_BACKGROUND = "blank glass / background"
REASON_NOT_HE = "not H&E: colours outside the haematoxylin/eosin range (photo, fluorescence, IHC?)"
REASON_NO_TEXTURE = "no tissue texture: a flat field or pixel noise"
#: Every reason the gate gives, in rule order (``ok`` first).
REASONS = (
    REASON_OK,
    REASON_EMPTY,
    REASON_DARK,
    REASON_BACKGROUND,
    REASON_NOT_HE,
    REASON_NO_TEXTURE,
)
_LUMA = (np.float32(0.299), np.float32(0.587), np.float32(0.114))

_SQRT_HALF = np.float32(np.sqrt(0.5))
_SQRT_SIXTH = np.float32(np.sqrt(1.0 / 6.0))


@dataclass(frozen=True)
class Quality:
    """The gate's verdict on one image or tile.

    ``assessed`` is True when the image may be given a cancer label (``is_tissue``,
    ``looks_like_he`` and ``has_texture``); ``dark_fraction``, ``foreign_fraction``,
    ``contrast``, ``detail`` and ``structure`` are the measures behind the verdict.
    """

    tissue_fraction: float
    is_tissue: bool
    looks_like_he: bool
    reason: str
    dark_fraction: float = 0.0
    foreign_fraction: float = 0.0
    has_texture: bool = True
    contrast: float = 0.0
    detail: float = 0.0
    structure: float = 0.0

    @property
    def assessed(self) -> bool:
        return self.is_tissue and self.looks_like_he and self.has_texture

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("tissue_fraction", "dark_fraction", "foreign_fraction", "structure"):
            out[key] = round(float(out[key]), 4)
        for key in ("contrast", "detail"):
            out[key] = round(float(out[key]), 2)
        return out


@dataclass(frozen=True)
class GateOptions:
    """The thresholds of :func:`assess` (defaults: the module constants)."""

    max_luminosity: float = MAX_LUMINOSITY
    min_luminosity: float = MIN_LUMINOSITY
    min_tissue_fraction: float = MIN_TISSUE_FRACTION
    max_dark_fraction: float = MAX_DARK_FRACTION
    hue_range: tuple[float, float] = HUE_RANGE
    min_chroma: float = MIN_CHROMA
    max_od: float = MAX_OD
    max_foreign_fraction: float = MAX_FOREIGN_FRACTION
    min_contrast: float = MIN_CONTRAST
    min_detail: float = MIN_DETAIL
    min_structure: float = MIN_STRUCTURE
    faint_contrast: float = FAINT_CONTRAST
    faint_structure: float = FAINT_STRUCTURE


def pixel_classes(pixels: np.ndarray, options: GateOptions) -> np.ndarray:
    """Class bits (:data:`DARK`, :data:`TISSUE`, :data:`FOREIGN`, :data:`PLAIN_TISSUE`) of uint8
    pixels ``(..., 3)``, computed from the rules in the module docstring."""
    y = luminance(pixels)
    dark = y < luminance_threshold(options.min_luminosity)
    tissue = (y < luminance_threshold(options.max_luminosity)) & ~dark
    plain = y < luminance_threshold(TISSUE_LUMINOSITY)
    table = od_table(256.0)
    od_r, od_g, od_b = table[pixels[..., 0]], table[pixels[..., 1]], table[pixels[..., 2]]
    scale = 1.0 / np.maximum(od_r + od_g + od_b, np.float32(1e-6))
    red, green, blue = od_r * scale, od_g * scale, od_b * scale
    x = (red - green) * _SQRT_HALF  # chromaticity-plane axes perpendicular to grey
    z = (red + green - 2.0 * blue) * _SQRT_SIXTH
    hue = np.degrees(np.arctan2(z, x)) % 360.0
    low, high = options.hue_range
    off_hue = (np.hypot(x, z) >= options.min_chroma) & ((hue < low) | (hue > high))
    saturated = np.maximum(np.maximum(od_r, od_g), od_b) > options.max_od
    foreign = tissue & (off_hue | saturated)
    classes = dark.view(np.uint8) | tissue.view(np.uint8) << 1
    classes |= foreign.view(np.uint8) << 2
    classes |= plain.view(np.uint8) << 3
    return classes


class ColourTable:
    """:func:`pixel_classes` of 24-bit colours, filled in blocks of 16 x 16 x 16 colours the
    first time a colour of the block is met.

    A lookup gives exactly :func:`pixel_classes` (each entry is computed by it, and
    ``tests/test_quality.py`` checks the function against its previous form on all 2**24
    colours). Filling costs about what classifying as many pixels directly does, and real
    JPEG tiles hold many colours (a 1,000-tile slide: about 950,000, in 2,000 of the 4,096
    blocks), so the first ``warm_pixels`` pixels are classified directly and the table is used
    (and filled) only after them: a long slide or a cohort pays for the table once. The table is
    16 MiB and safe to use from several threads (blocks are filled under a lock).

    >>> table = colour_table(GateOptions())
    >>> pixels = np.array([[[241, 235, 238], [200, 120, 170]]], np.uint8)
    >>> bool((table.classes(pixels) == pixel_classes(pixels, GateOptions())).all())
    True
    """

    _UNFILLED = 255  # no class combination reaches it (the bits sum to 15)

    def __init__(self, options: GateOptions, *, warm_pixels: int = TABLE_WARM_PIXELS) -> None:
        self.options = options
        self.warm_pixels = warm_pixels
        self._seen = 0  # pixels classified so far (approximate under threads: a heuristic)
        self._table = np.full(1 << 24, self._UNFILLED, dtype=np.uint8)
        self._lock = threading.Lock()

    def classes(self, pixels: np.ndarray) -> np.ndarray:
        """Class bits of uint8 pixels ``(..., 3)``, the shape of ``pixels[..., 0]``."""
        if self._seen < self.warm_pixels:
            self._seen += pixels.size // 3
            return pixel_classes(pixels, self.options)
        codes = pixels[..., 0].astype(np.int32) << 16
        codes |= pixels[..., 1].astype(np.int32) << 8
        codes |= pixels[..., 2]
        out = self._table.take(codes)
        missing = out == self._UNFILLED
        if missing.any():
            self._fill(codes[missing])
            out = self._table.take(codes)
        return out

    def full(self) -> np.ndarray:
        """The whole table, indexed by ``r << 16 | g << 8 | b`` (every block filled)."""
        self._seen = max(self._seen, self.warm_pixels)
        self._fill(np.arange(1 << 24, dtype=np.int32)[:: 1 << 4])
        return self._table

    def _fill(self, codes: np.ndarray) -> None:
        offsets = np.arange(16, dtype=np.int32)
        inside = ((offsets[:, None, None] << 16) | (offsets[:, None] << 8) | offsets).ravel()
        with self._lock:
            blocks = np.unique(codes & 0xF0F0F0)
            blocks = blocks[self._table[blocks] == self._UNFILLED]
            for start in range(0, len(blocks), 64):  # 262,144 colours per pass
                block_codes = (blocks[start : start + 64, None] | inside).ravel()
                colours = np.stack(
                    [block_codes >> 16, (block_codes >> 8) & 255, block_codes & 255], axis=-1
                ).astype(np.uint8)
                self._table[block_codes] = pixel_classes(colours, self.options)


@functools.lru_cache(maxsize=4)
def colour_table(options: GateOptions) -> ColourTable:
    """The :class:`ColourTable` of one set of thresholds (one per process)."""
    return ColourTable(options)


#: The :func:`colour_table` of each set of thresholds once :func:`class_table` has filled it
#: whole: :func:`pixel_measures` then classifies every image through it (lookups only).
_COMPLETE: dict[GateOptions, ColourTable] = {}


def class_table(options: GateOptions) -> np.ndarray:
    """:func:`pixel_classes` of every 24-bit colour, indexed by ``r << 16 | g << 8 | b``
    (16 MiB; every block of :func:`colour_table` filled, in about a second of CPU). From then
    on :func:`assess` classifies images of any size through it (same classes)."""
    table = colour_table(options)
    out = table.full()
    _COMPLETE[options] = table
    return out


def fill_class_table(options: GateOptions | None = None) -> threading.Thread:
    """Fill :func:`class_table` in a daemon thread (a long-running process, such as a server
    assessing many small images, then pays one lookup per pixel instead of ~25 array passes);
    until it is filled, :func:`assess` classifies as before."""
    thread = threading.Thread(
        target=class_table,
        args=(options or GateOptions(),),
        name="breastpath-colour-table",
        daemon=True,
    )
    thread.start()
    return thread


def pixel_measures(pixels: np.ndarray, options: GateOptions) -> dict[str, np.ndarray]:
    """Per-image shares ``(N,)`` of a batch of pixel rows ``(N, P, 3)`` uint8.

    Returns ``dark``, ``tissue`` (shares of all pixels) and ``foreign`` (share of the tissue
    pixels; 0 without tissue). Batches of more than :data:`TABLE_PIXELS` pixels, and any batch
    once :func:`class_table` has been filled, are classified through the colour table (same
    result, several times faster).
    """
    complete = _COMPLETE.get(options)
    if complete is not None:
        classes = complete.classes(pixels)
    elif pixels.size // 3 > TABLE_PIXELS:
        classes = colour_table(options).classes(pixels)
    else:
        classes = pixel_classes(pixels, options)
    return class_shares(classes)


def class_shares(classes: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`pixel_measures` from the class bits ``(N, P)`` of each image's pixels, plus
    ``plain_tissue`` (share of :data:`PLAIN_TISSUE` pixels)."""
    n_tissue = ((classes & TISSUE) != 0).sum(axis=1)
    n_foreign = ((classes & FOREIGN) != 0).sum(axis=1)
    count = max(classes.shape[1], 1)
    return {
        "dark": ((classes & DARK) != 0).sum(axis=1) / count,
        "tissue": n_tissue / count,
        "foreign": np.where(n_tissue > 0, n_foreign / np.maximum(n_tissue, 1), 0.0),
        "plain_tissue": ((classes & PLAIN_TISSUE) != 0).sum(axis=1) / count,
    }


def texture_measures(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image ``contrast``, ``detail`` and ``structure`` ``(N,)`` of a batch ``(N, H, W, 3)``
    uint8 (rule 4 of the module docstring), in one vectorised pass.

    >>> rng = np.random.default_rng(0)
    >>> noise = rng.integers(100, 200, (1, 50, 50, 3), dtype=np.uint8)
    >>> round(float(texture_measures(noise)["structure"][0]), 1)
    0.0
    """
    n, height, width = images.shape[:3]
    red, green, blue = _LUMA
    grey = images[..., 0] * red + images[..., 1] * green + images[..., 2] * blue
    var = grey.reshape(n, -1).var(axis=1)
    squares, directions = np.zeros(n, np.float32), 0
    for axis, length in ((1, height), (2, width)):
        if length > 1:
            squares += np.square(np.diff(grey, axis=axis)).mean(axis=(1, 2))
            directions += 1
    structure = np.ones(n)  # too thin to measure: not held against the image
    h, w = height // 2 * 2, width // 2 * 2
    if h and w:
        blocks = grey[:, :h, :w].reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
        ratio = 4.0 * blocks.reshape(n, -1).var(axis=1) / np.maximum(var, 1e-6)
        structure = np.where(var > 1e-6, (ratio - 1.0) / 3.0, 0.0)
    return {
        "contrast": np.sqrt(var),
        "detail": np.sqrt(squares / max(directions, 1) / 2.0),
        "structure": structure,
    }


def rule_masks(measures: dict[str, np.ndarray], options: GateOptions) -> dict[str, np.ndarray]:
    """The rules of the module docstring as bool arrays ``(N,)``: ``too_dark``, ``is_tissue``,
    ``looks_like_he`` and ``textured``, from :func:`pixel_measures` and
    :func:`texture_measures`."""
    contrast, structure = measures["contrast"], measures["structure"]
    too_dark = measures["dark"] >= options.max_dark_fraction
    is_tissue = ~too_dark & (measures["tissue"] >= options.min_tissue_fraction)
    return {
        "too_dark": too_dark,
        "is_tissue": is_tissue,
        "looks_like_he": is_tissue & (measures["foreign"] <= options.max_foreign_fraction),
        "textured": (contrast >= options.min_contrast)
        & (measures["detail"] >= options.min_detail)
        & (structure >= options.min_structure)
        & ((contrast >= options.faint_contrast) | (structure >= options.faint_structure)),
    }


def reasons_of(masks: dict[str, np.ndarray]) -> np.ndarray:
    """The reason ``(N,)`` of each image from :func:`rule_masks`: the first rule it fails."""
    failed = (
        (masks["too_dark"], REASON_DARK),
        (~masks["is_tissue"], REASON_BACKGROUND),
        (~masks["looks_like_he"], REASON_NOT_HE),
        (~masks["textured"], REASON_NO_TEXTURE),
    )
    reasons = np.full(len(masks["too_dark"]), REASON_OK, dtype=object)
    for mask, reason in reversed(failed):  # the last written, the first rule failed, stays
        reasons[mask] = reason
    return reasons


def verdicts(measures: dict[str, np.ndarray], options: GateOptions) -> list[Quality]:
    """Turn :func:`pixel_measures` and :func:`texture_measures` into one :class:`Quality` per
    image."""
    masks = rule_masks(measures, options)
    reasons = reasons_of(masks)
    return [
        Quality(
            float(measures["tissue"][i]),
            bool(masks["is_tissue"][i]),
            bool(masks["looks_like_he"][i]),
            str(reasons[i]),
            dark_fraction=float(measures["dark"][i]),
            foreign_fraction=float(measures["foreign"][i]),
            has_texture=bool(masks["textured"][i]),
            contrast=float(measures["contrast"][i]),
            detail=float(measures["detail"][i]),
            structure=float(measures["structure"][i]),
        )
        for i in range(len(reasons))
    ]


def assess_batch(tiles: np.ndarray, **thresholds: Any) -> tuple[np.ndarray, np.ndarray]:
    """The gate's reason for each tile of a batch ``(N, H, W, 3)`` uint8, and each tile's
    share of tissue pixels by the one tissue rule at its default luminosity (the fast path of
    the tile check, :class:`breastpath.inference.tiles.TileCheck`).

    The reasons are those :func:`assess` gives each tile (any size up to :data:`MAX_PIXELS`),
    computed from one lookup per pixel in :func:`colour_table` (the colour classes and the
    tissue share together) and the texture measures of the tiles that pass the colour rules.

    >>> glass = np.full((1, 50, 50, 3), (241, 235, 238), np.uint8)
    >>> reasons, plain = assess_batch(np.concatenate([glass, glass * 0]))
    >>> reasons.tolist(), plain.tolist()
    (['blank glass / background', 'too dark / black frame'], [0.0, 1.0])
    """
    options = _options(thresholds)
    if tiles.ndim != 4 or tiles.dtype != np.uint8 or tiles.shape[-1] != 3:
        raise InvalidImageError(f"expected (N, H, W, 3) uint8 tiles, got {tiles.shape}")
    n, height, width = tiles.shape[:3]
    if height * width == 0 or height * width > MAX_PIXELS:  # not tiles: the general path
        reasons = np.array([q.reason for q in assess(tiles, **thresholds)], dtype=object)
        return reasons, _plain_share(tiles)
    table = colour_table(options)
    reasons = np.empty(n, dtype=object)
    plain = np.empty(n)
    for start in range(0, n, BATCH_TILES):
        chunk = tiles[start : start + BATCH_TILES]
        shares = class_shares(table.classes(chunk).reshape(len(chunk), -1))
        measures = {**shares, **_texture_where_needed(chunk, shares, options)}
        reasons[start : start + len(chunk)] = reasons_of(rule_masks(measures, options))
        plain[start : start + len(chunk)] = shares["plain_tissue"]
    return reasons, plain


def _plain_share(tiles: np.ndarray) -> np.ndarray:
    """Share of :data:`PLAIN_TISSUE` pixels per tile, from the luminance (0 for empty tiles)."""
    if tiles.shape[1] * tiles.shape[2] == 0:
        return np.zeros(len(tiles))
    y = luminance(tiles).reshape(len(tiles), -1)
    return (y < luminance_threshold(TISSUE_LUMINOSITY)).mean(axis=1)


def _options(thresholds: dict[str, Any]) -> GateOptions:
    try:
        return GateOptions(**thresholds)
    except TypeError:
        raise InvalidImageError(
            f"unknown quality threshold(s): {', '.join(sorted(thresholds))}"
        ) from None


def _texture_where_needed(
    tiles: np.ndarray, shares: dict[str, np.ndarray], options: GateOptions
) -> dict[str, np.ndarray]:
    """:func:`texture_measures` of the tiles that pass the colour rules (1, 2, 3); the others'
    verdict does not depend on texture (they get NaN)."""
    flat = {k: np.zeros(len(tiles)) for k in ("contrast", "detail", "structure")}
    masks = rule_masks({**shares, **flat}, options)
    need = np.flatnonzero(masks["looks_like_he"])
    if len(need) == len(tiles):
        return texture_measures(tiles)
    out = {k: np.full(len(tiles), np.nan, dtype=np.float32) for k in flat}
    if len(need):
        for key, values in texture_measures(tiles[need]).items():
            out[key][need] = values
    return out


def _subsample(image: np.ndarray, max_pixels: int) -> np.ndarray:
    """An ``(H, W, 3)`` image, or a regular subsample of it when it is large."""
    height, width = image.shape[:2]
    step = max(1, int(np.ceil(np.sqrt(height * width / max_pixels))))
    return np.ascontiguousarray(image[::step, ::step])


def _measure(images: np.ndarray, options: GateOptions) -> list[Quality]:
    """The verdicts of a batch ``(N, H, W, 3)`` of non-empty images."""
    rows = images.reshape(len(images), -1, 3)
    measures = {**pixel_measures(rows, options), **texture_measures(images)}
    return verdicts(measures, options)


def _check(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(
            f"quality gate: expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}"
        )
    return image


def assess(
    images: Sequence[np.ndarray] | np.ndarray,
    *,
    max_pixels: int = MAX_PIXELS,
    **thresholds: Any,
) -> list[Quality]:
    """The gate's verdict for each RGB uint8 image (any sizes) or each tile of a batch.

    Parameters
    ----------
    images
        A sequence of ``(H, W, 3)`` images or one ``(N, H, W, 3)`` batch (assessed in one
        vectorised pass).
    max_pixels
        Larger images are assessed on a regular subsample of about this many pixels.
    **thresholds
        Any field of :class:`GateOptions`: ``max_luminosity`` (0.88), ``min_luminosity`` (0.1),
        ``min_tissue_fraction`` (0.02), ``max_dark_fraction`` (0.9), ``hue_range``
        ((70, 215) degrees), ``min_chroma`` (0.04), ``max_od`` (3.0),
        ``max_foreign_fraction`` (0.6), ``min_contrast`` (3.0 grey levels), ``min_detail``
        (0.5 grey levels), ``min_structure`` (0.05), ``faint_contrast`` (8.0 grey levels),
        ``faint_structure`` (0.2).
    """
    options = _options(thresholds)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.dtype != np.uint8 or images.shape[-1] != 3:
            raise InvalidImageError(f"expected (N, H, W, 3) uint8 tiles, got {images.shape}")
        if images.shape[1] * images.shape[2] > max_pixels:
            return [q for image in images for q in assess([image], max_pixels=max_pixels)]
        if images.shape[1] * images.shape[2] == 0:
            return [_empty()] * len(images)
        return _measure(images, options)
    listed = list(images)
    if len(listed) > 1 and _same_shape(listed, max_pixels):  # one vectorised pass
        return assess(np.stack(listed), max_pixels=max_pixels, **thresholds)
    out: list[Quality] = []
    for image in listed:
        image = _check(image)
        if image.size == 0:
            out.append(_empty())
            continue
        out.extend(_measure(_subsample(image, max_pixels)[None], options))
    return out


def _same_shape(images: Sequence[np.ndarray], max_pixels: int) -> bool:
    """Whether ``images`` are small RGB uint8 arrays of one shape (stackable into a batch)."""
    first = images[0]
    if not isinstance(first, np.ndarray) or first.ndim != 3 or first.dtype != np.uint8:
        return False
    if first.shape[0] * first.shape[1] > max_pixels:
        return False
    return all(
        isinstance(im, np.ndarray) and im.shape == first.shape and im.dtype == np.uint8
        for im in images
    )


def _empty() -> Quality:
    return Quality(0.0, False, False, REASON_EMPTY)
