"""Write synthetic pyramidal TIFF slides: white background with H&E-like tissue ellipses.

For tests, benchmarks and demos: a slide of any size is written tile by tile with pre-encoded
(zlib) tiles, so a 20,000 x 20,000 slide of mostly background takes well under a second and a
few MB. Tissue colours follow the generated IDC patches of the test-suite: ``"normal"`` tissue
is pink with sparse dark nuclei, ``"tumor"`` darker, more purple and crowded with nuclei.
Like tissue, and unlike pixel noise (which the input-quality gate refuses), the colour varies in
2-pixel cells and nuclei are 3-pixel blobs, at every level.
A ``"glass"`` blob drawn after tissue is a hole in the section: blank glass as a real scanner
shows it (mean RGB about (241, 235, 238), noise about 2.6), the pixels a tissue detector must
not score.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BASE_COLOR = {"normal": (225, 160, 200), "tumor": (150, 90, 170), "glass": (241, 235, 238)}
NUCLEI = {"normal": 0.05, "tumor": 0.35, "glass": 0.0}
#: How much darker (per channel) a nucleus is than its tissue.
NUCLEUS_DARKNESS = {"normal": 60.0, "tumor": 80.0, "glass": 0.0}
NOISE = {"normal": 18.0, "tumor": 18.0, "glass": 2.6}


@dataclass(frozen=True)
class Blob:
    """An elliptical piece of tissue (or, ``kind="glass"``, a hole) in level-0 pixels."""

    cx: float
    cy: float
    rx: float
    ry: float
    kind: str = "normal"


def default_blobs(width: int, height: int) -> list[Blob]:
    """One normal and one tumour ellipse, each about 6% of the slide's width across."""
    r = max(8.0, 0.03 * min(width, height))
    return [
        Blob(0.3 * width, 0.4 * height, 1.2 * r, r, "normal"),
        Blob(0.7 * width, 0.6 * height, 1.2 * r, r, "tumor"),
    ]


def render(
    x0: int,
    y0: int,
    shape: tuple[int, int],
    *,
    downsample: float,
    blobs: Sequence[Blob],
    rng: np.random.Generator,
) -> np.ndarray | None:
    """RGB pixels of a region of a level (origin in that level's pixels); None when blank."""
    height, width = shape
    ys = (y0 + np.arange(height) + 0.5) * downsample
    xs = (x0 + np.arange(width) + 0.5) * downsample
    out = None
    for blob in blobs:
        if (
            xs[-1] < blob.cx - blob.rx
            or xs[0] > blob.cx + blob.rx
            or ys[-1] < blob.cy - blob.ry
            or ys[0] > blob.cy + blob.ry
        ):
            continue  # the region misses this blob's bounding box
        inside = ((xs[None, :] - blob.cx) / blob.rx) ** 2 + (
            (ys[:, None] - blob.cy) / blob.ry
        ) ** 2 <= 1.0
        if not inside.any():
            continue
        if out is None:
            out = np.full((height, width, 3), 255, dtype=np.uint8)
        pixels = _texture(blob.kind, shape, rng)
        out[inside] = np.clip(pixels[inside], 0, 255).astype(np.uint8)
    return out


def _coarse(values: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """``values`` repeated ``factor`` times along both axes, cut to ``shape``."""
    return values.repeat(factor, 0).repeat(factor, 1)[: shape[0], : shape[1]]


def _texture(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Float RGB pixels of one kind: 2-pixel colour cells, fine noise and 3-pixel nuclei
    (glass: its own fine noise only)."""
    height, width = shape
    base = np.asarray(BASE_COLOR[kind], dtype=np.float32)
    if kind == "glass":
        return base + rng.normal(0, NOISE[kind], (height, width, 3)).astype(np.float32)
    cells = rng.normal(0, NOISE[kind], (-(-height // 2), -(-width // 2), 3)).astype(np.float32)
    pixels = base + _coarse(cells, 2, shape) + rng.normal(0, 4, (height, width, 3))
    nuclei = rng.random((-(-height // 3), -(-width // 3))) < NUCLEI[kind]
    pixels[_coarse(nuclei, 3, shape)] -= NUCLEUS_DARKNESS[kind]
    return pixels


def _encoded_tiles(
    width: int, height: int, *, tile: int, downsample: float, blobs: Sequence[Blob], seed: int
) -> Iterator[bytes]:
    blank = zlib.compress(np.full((tile, tile, 3), 255, dtype=np.uint8).tobytes(), 1)
    rng = np.random.default_rng(seed)
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            pixels = render(x, y, (tile, tile), downsample=downsample, blobs=blobs, rng=rng)
            yield blank if pixels is None else zlib.compress(pixels.tobytes(), 1)


def write_synthetic_slide(
    path: str | Path,
    *,
    size: tuple[int, int] = (4096, 4096),
    tile: int = 512,
    downsamples: Sequence[int] = (1, 4, 16, 64),
    blobs: Sequence[Blob] | None = None,
    mpp: float | None = 0.25,
    pyramid: str = "subifds",
    seed: int = 0,
) -> Path:
    """Write a tiled, zlib-compressed, pyramidal RGB TIFF (OME-TIFF when named ``*.ome.tif``).

    Parameters
    ----------
    size
        Level-0 ``(width, height)``.
    downsamples
        One level per factor, starting with 1; levels smaller than a tile are dropped.
    blobs
        Tissue ellipses in level-0 pixels (default :func:`default_blobs`).
    mpp
        Microns per level-0 pixel, written to the resolution tags (and OME metadata).
    pyramid
        ``"subifds"`` (OME-TIFF style) or ``"pages"`` (one page per level, as OpenSlide's
        generic tiled TIFF expects).

    Examples
    --------
    >>> write_synthetic_slide("big.tif", size=(20480, 20480))  # doctest: +SKIP
    PosixPath('big.tif')
    """
    import tifffile

    width, height = size
    blobs = list(default_blobs(width, height) if blobs is None else blobs)
    factors = [d for d in downsamples if d == 1 or max(width, height) // d >= tile]
    if not factors or factors[0] != 1:
        raise ValueError("downsamples must start with 1")
    ome = str(path).lower().endswith((".ome.tif", ".ome.tiff"))
    with tifffile.TiffWriter(path, bigtiff=True, ome=ome) as writer:
        for i, factor in enumerate(factors):
            w, h = -(-width // factor), -(-height // factor)
            options: dict = {
                "shape": (h, w, 3),
                "dtype": np.uint8,
                "tile": (tile, tile),
                "compression": "zlib",
                "photometric": "rgb",
            }
            if mpp is not None:
                options.update(resolution=(1e4 / (mpp * factor),) * 2, resolutionunit="CENTIMETER")
            if i == 0:
                if pyramid == "subifds":
                    options["subifds"] = len(factors) - 1
                if ome:
                    meta: dict[str, object] = {"axes": "YXS"}
                    if mpp is not None:
                        meta.update(PhysicalSizeX=mpp, PhysicalSizeY=mpp)
                    options["metadata"] = meta
            else:
                options["subfiletype"] = 1
                options["metadata"] = None
            tiles = _encoded_tiles(w, h, tile=tile, downsample=factor, blobs=blobs, seed=seed + i)
            writer.write(tiles, **options)
    return Path(path)
