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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from breastpath.errors import InvalidImageError
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
#: Pixel class bits (:func:`pixel_classes`).
DARK, TISSUE, FOREIGN = 1, 2, 4

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
    """Class bits (:data:`DARK`, :data:`TISSUE`, :data:`FOREIGN`) of uint8 pixels ``(..., 3)``,
    computed from the rules in the module docstring."""
    y = luminance(pixels)
    dark = y < luminance_threshold(options.min_luminosity)
    tissue = (y < luminance_threshold(options.max_luminosity)) & ~dark
    od = od_table(256.0)[pixels]  # (..., 3) float32
    scale = 1.0 / np.maximum(od.sum(axis=-1), np.float32(1e-6))
    red, green, blue = od[..., 0] * scale, od[..., 1] * scale, od[..., 2] * scale
    x = (red - green) * _SQRT_HALF  # chromaticity-plane axes perpendicular to grey
    z = (red + green - 2.0 * blue) * _SQRT_SIXTH
    hue = np.degrees(np.arctan2(z, x)) % 360.0
    low, high = options.hue_range
    off_hue = (np.hypot(x, z) >= options.min_chroma) & ((hue < low) | (hue > high))
    foreign = tissue & (off_hue | (od.max(axis=-1) > options.max_od))
    return (dark * DARK | tissue * TISSUE | foreign * FOREIGN).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def class_table(options: GateOptions) -> np.ndarray:
    """:func:`pixel_classes` of every 24-bit colour, indexed by ``r << 16 | g << 8 | b``
    (16 MiB, built once per set of thresholds, in about a second)."""
    table = np.empty(1 << 24, dtype=np.uint8)
    levels = np.arange(256, dtype=np.uint8)
    green, blue = np.meshgrid(levels, levels, indexing="ij")
    for red in range(256):
        plane = np.stack([np.full_like(green, red), green, blue], axis=-1)
        table[red << 16 : (red + 1) << 16] = pixel_classes(plane, options).ravel()
    return table


def pixel_measures(pixels: np.ndarray, options: GateOptions) -> dict[str, np.ndarray]:
    """Per-image shares ``(N,)`` of a batch of pixel rows ``(N, P, 3)`` uint8.

    Returns ``dark``, ``tissue`` (shares of all pixels) and ``foreign`` (share of the tissue
    pixels; 0 without tissue). Batches of more than :data:`TABLE_PIXELS` pixels are classified
    through :func:`class_table` (same result, several times faster).
    """
    if pixels.size // 3 > TABLE_PIXELS:
        codes = pixels[..., 0].astype(np.int32) << 16
        codes |= pixels[..., 1].astype(np.int32) << 8
        codes |= pixels[..., 2]
        classes = class_table(options)[codes]
    else:
        classes = pixel_classes(pixels, options)
    n_tissue = ((classes & TISSUE) != 0).sum(axis=1)
    n_foreign = ((classes & FOREIGN) != 0).sum(axis=1)
    count = max(pixels.shape[1], 1)
    return {
        "dark": ((classes & DARK) != 0).sum(axis=1) / count,
        "tissue": n_tissue / count,
        "foreign": np.where(n_tissue > 0, n_foreign / np.maximum(n_tissue, 1), 0.0),
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


def verdicts(measures: dict[str, np.ndarray], options: GateOptions) -> list[Quality]:
    """Turn :func:`pixel_measures` and :func:`texture_measures` into one :class:`Quality` per
    image."""
    out = []
    for dark, tissue, foreign, contrast, detail, structure in zip(
        *(measures[k] for k in ("dark", "tissue", "foreign", "contrast", "detail", "structure")),
        strict=True,
    ):
        too_dark = dark >= options.max_dark_fraction
        is_tissue = bool(not too_dark and tissue >= options.min_tissue_fraction)
        looks = bool(is_tissue and foreign <= options.max_foreign_fraction)
        textured = bool(
            contrast >= options.min_contrast
            and detail >= options.min_detail
            and structure >= options.min_structure
            and (contrast >= options.faint_contrast or structure >= options.faint_structure)
        )
        if too_dark:
            reason = REASON_DARK
        elif not is_tissue:
            reason = REASON_BACKGROUND
        elif not looks:
            reason = REASON_NOT_HE
        elif not textured:
            reason = REASON_NO_TEXTURE
        else:
            reason = REASON_OK
        out.append(
            Quality(
                float(tissue),
                is_tissue,
                looks,
                reason,
                dark_fraction=float(dark),
                foreign_fraction=float(foreign),
                has_texture=textured,
                contrast=float(contrast),
                detail=float(detail),
                structure=float(structure),
            )
        )
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
    try:
        options = GateOptions(**thresholds)
    except TypeError:
        raise InvalidImageError(
            f"unknown quality threshold(s): {', '.join(sorted(thresholds))}"
        ) from None
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
