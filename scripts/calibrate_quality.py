"""Calibrate the input-quality gate (:mod:`breastpath.inference.quality`) on real images.

Every real H&E image must pass (IDC patches, BreakHis images and tiles, tissue tiles of the
Aperio SVS) and every non-tissue input must be flagged (blank glass, black, white, noise, two
photos, tiles of a DAPI fluorescence scan; and, at both bundled models' input scales, 50x50 and
700x460, flat and near-flat fields, smooth ramps, H&E-coloured noise, downscaled noise and
photos). Prints one Markdown table: per set, how many were
flagged, by which rule, and the smallest margin to each threshold; then the gate's speed.

    python scripts/calibrate_quality.py [--data ../shared/data] [--tile 224]

Reading the slides: with ``imagecodecs`` installed the package's slide reader decodes their
JPEG tiles; without it this script decodes them with Pillow (an Adobe marker tells libjpeg that
Aperio tiles are RGB, and NDPI levels are single JPEG streams).
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from breastpath.inference import quality
from breastpath.io import markdown_table
from breastpath.slide.tissue import tissue_mask

ROOT = Path(__file__).resolve().parents[1]
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _images(folder: Path) -> list[np.ndarray]:
    return [_png(p) for p in sorted(folder.rglob("*.png"))]


def _tiff_level_pillow(path: Path, level: int) -> np.ndarray:
    """One level of an SVS (tiled JPEG) or NDPI (one JPEG stream) decoded with Pillow."""
    import tifffile

    Image.MAX_IMAGE_PIXELS = None
    with tifffile.TiffFile(path) as tif:
        page, handle = tif.pages[level], tif.filehandle
        if not page.jpegtables:  # NDPI: the level is one JPEG stream
            handle.seek(page.tags["StripOffsets"].value[0])
            data = handle.read(page.tags["StripByteCounts"].value[0])
            return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        tiles = []
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            handle.seek(offset)
            data = b"\xff\xd8" + ADOBE_RGB + page.jpegtables[2:-2] + handle.read(count)[2:]
            tiles.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        per_row = -(-page.imagewidth // page.tilewidth)
        rows = [np.concatenate(tiles[i : i + per_row], 1) for i in range(0, len(tiles), per_row)]
        return np.concatenate(rows)[: page.imagelength, : page.imagewidth]


def read_level(path: Path, level: int) -> tuple[np.ndarray, str]:
    """A slide level as RGB and the reader used."""
    try:
        import imagecodecs  # noqa: F401

        from breastpath.slide.reader import open_slide

        with open_slide(path) as reader:
            return reader.read_level(level), "breastpath slide reader"
    except ImportError:
        return _tiff_level_pillow(path, level), "Pillow JPEG (no imagecodecs)"


def cut(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Full tiles ``(N, size, size, 3)`` and their top-left corners ``(N, 2)`` (y, x)."""
    height, width = image.shape[:2]
    ys, xs = range(0, height - size + 1, size), range(0, width - size + 1, size)
    corners = np.array([(y, x) for y in ys for x in xs])
    tiles = np.stack([image[y : y + size, x : x + size] for y, x in corners])
    return tiles, corners


def slide_tissue_tiles(image: np.ndarray, size: int, *, min_share: float = 0.5) -> np.ndarray:
    """Tiles the slide pipeline would score: at least ``min_share`` tissue by the slide mask."""
    step = 8
    mask, _ = tissue_mask(np.ascontiguousarray(image[::step, ::step]))
    tiles, corners = cut(image, size)
    keep = [
        mask[y // step : (y + size) // step, x // step : (x + size) // step].mean() >= min_share
        for y, x in corners
    ]
    return tiles[np.array(keep, dtype=bool)]


def negatives() -> dict[str, list[np.ndarray]]:
    from skimage import data as skdata

    rng = np.random.default_rng(0)
    return {
        "blank glass (241,235,238)": [np.full((50, 50, 3), (241, 235, 238), np.uint8)],
        "black": [np.zeros((50, 50, 3), np.uint8)],
        "white": [np.full((50, 50, 3), 255, np.uint8)],
        "uniform noise": [rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)],
        "cat (skimage chelsea)": [skdata.chelsea()],
        "astronaut (skimage)": [skdata.astronaut()],
        "flat eosin pink (230,140,190)": [np.full((50, 50, 3), (230, 140, 190), np.uint8)],
        "flat grey 128, 700x460": [np.full((460, 700, 3), 128, np.uint8)],
        "pink-purple noise": [textureless((50, 50))[30]],
        "uniform noise downscaled 8x": [textureless((50, 50))[-2]],
        "Hubble deep field (skimage)": [skdata.hubble_deep_field()],
    }


def textureless(shape: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Generated inputs without tissue texture at ``shape``: 6 flat fields (grey 90/128/180,
    haematoxylin, eosin, pale pink), the same with Gaussian noise of sd 1, 2 and 4, smooth
    ramps, H&E-palette and pink Gaussian noise, and uniform noise downscaled 2-16x."""
    rng = np.random.default_rng(seed)
    colours = [(90,) * 3, (128,) * 3, (180,) * 3, (95, 70, 150), (230, 140, 190), (240, 200, 220)]
    out = []
    for colour in colours:
        flat = np.full((*shape, 3), colour, np.float64)
        out += [flat] + [flat + rng.normal(0, sd, flat.shape) for sd in (1, 2, 4)]
        out.append(flat + np.linspace(-12, 12, shape[1])[None, :, None])
    palette = np.array([(95, 70, 150), (230, 140, 190), (240, 200, 220), (150, 90, 170)])
    for _ in range(5):
        out.append(palette[rng.integers(0, 4, shape)])
        out.append(np.array((200, 130, 180)) + rng.normal(0, 30, (*shape, 3)))
    for factor in (2, 4, 8, 16):
        big = rng.integers(0, 256, (shape[0] * factor, shape[1] * factor, 3), dtype=np.uint8)
        out.append(np.asarray(Image.fromarray(big).resize(shape[::-1])))
    return [np.clip(image, 0, 255).astype(np.uint8) for image in out]


def photos(shape: tuple[int, int]) -> list[np.ndarray]:
    """The scikit-image sample photos (colour and grey, Hubble deep field included) at
    ``shape``."""
    from skimage import data as skdata

    names = ["chelsea", "astronaut", "coffee", "rocket", "hubble_deep_field", "retina", "grass"]
    names += ["gravel", "brick", "moon", "camera", "coins", "immunohistochemistry"]
    out = []
    for name in names:
        image = getattr(skdata, name)()
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
        out.append(np.asarray(Image.fromarray(image).resize(shape[::-1])))
    return out


def row(name: str, images, *, expect_pass: bool) -> list[str]:
    """One table row: counts per verdict and the smallest margin to each threshold."""
    verdicts = quality.assess(images)
    n = len(verdicts)
    flagged = [q for q in verdicts if not q.assessed]
    reasons: dict[str, int] = {}
    for q in flagged:
        reasons[q.reason.split(":")[0]] = reasons.get(q.reason.split(":")[0], 0) + 1
    tf = np.array([q.tissue_fraction for q in verdicts])
    dark = np.array([q.dark_fraction for q in verdicts])
    foreign = np.array([q.foreign_fraction for q in verdicts if q.is_tissue] or [np.nan])
    structure = np.array([q.structure for q in verdicts])
    contrast = np.array([q.contrast for q in verdicts])
    low_foreign = f"{np.nanmin(foreign):.3f}" if np.isfinite(foreign).any() else "-"
    rate = (len(flagged) / n) if n else float("nan")
    return [
        name,
        str(n),
        "pass" if expect_pass else "flag",
        f"{rate:.2%}" if expect_pass else f"{1 - rate:.2%} missed",
        "; ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "-",
        f"{tf.min() - quality.MIN_TISSUE_FRACTION:+.3f}" if expect_pass else f"{tf.max():.3f}",
        f"{quality.MAX_DARK_FRACTION - dark.max():+.3f}" if expect_pass else f"{dark.max():.3f}",
        f"{quality.MAX_FOREIGN_FRACTION - np.nanmax(foreign):+.3f}" if expect_pass else low_foreign,
        f"{contrast.min():.2f} / {structure.min():+.3f}",
    ]


def model_table(names: list[str]) -> str:
    """The non-tissue inputs through bundled models: the label without the gate (what every
    entry point answered before it existed; ``allow_non_tissue=True``) and with it."""
    from breastpath.inference.predictor import Predictor

    rows = []
    for name in names:
        predictor = Predictor.from_checkpoint(name, device="cpu")
        for label, images in negatives().items():
            image = images[0]
            forced = predictor.predict_images([image], allow_non_tissue=True)[0]
            gated = predictor.predict_images([image])[0]
            after = gated.label or f"not assessed: {gated.quality['reason']}"
            rows.append([name, label, f"{forced.label} {forced.probability:.3f}", after])
    header = ["model", "input", "before (no gate)", "after"]
    return markdown_table(header, rows)


def speed(tiles: np.ndarray, repeat: int = 3) -> float:
    """Tiles per second of :func:`quality.assess` on a batch (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        quality.assess(tiles)
        best = min(best, time.perf_counter() - started)
    return len(tiles) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--tile", type=int, default=224, help="slide tile side in pixels")
    parser.add_argument(
        "--models", nargs="*", default=[], help="also run the non-tissue inputs through these"
    )
    args = parser.parse_args()
    data = args.data
    idc_files = sorted((data / "idc").rglob("*.png"))
    idc = [_png(p) for p in idc_files]
    full = [im for im in idc if im.shape[:2] == (50, 50)]
    edge = [im for im in idc if im.shape[:2] != (50, 50)]
    svs, svs_reader = read_level(data / "wsi" / "CMU-1-Small-Region.svs", 0)
    ndpi, ndpi_reader = read_level(data / "wsi" / "test3-DAPI-2-387.ndpi", 1)
    svs_tiles = slide_tissue_tiles(svs, args.tile)
    svs_tiles_50 = slide_tissue_tiles(svs, 50, min_share=0.9)
    sets: list[tuple[str, Callable[[], object], bool]] = [
        ("IDC patches 50x50", lambda: full, True),
        ("IDC edge patches (short)", lambda: edge, True),
        ("BreakHis images 700x460", lambda: _images(data / "breakhis"), True),
        ("BreakHis tiles 224x224", lambda: _images(data / "breakhis-tiles"), True),
        (f"SVS tissue tiles {args.tile}px", lambda: svs_tiles, True),
        ("SVS tissue tiles 50px", lambda: svs_tiles_50, True),
        (f"DAPI .ndpi tiles {args.tile}px (level 1)", lambda: cut(ndpi, args.tile)[0], False),
        ("DAPI .ndpi tiles 50px (level 1)", lambda: cut(ndpi, 50)[0], False),
    ]
    header = [
        "set",
        "n",
        "expected",
        "flagged (false rejections) / missed",
        "reasons",
        "tissue margin / max tf",
        "dark margin / max dark",
        "foreign margin / min foreign",
        "min contrast / min structure",
    ]
    rows = [row(name, get(), expect_pass=ok) for name, get, ok in sets]
    rows += [row(name, images, expect_pass=False) for name, images in negatives().items()]
    for shape in ((50, 50), (460, 700)):
        size = f"{shape[1]}x{shape[0]}"
        rows.append(row(f"generated textureless {size}", textureless(shape), expect_pass=False))
        rows.append(row(f"photos {size}", photos(shape), expect_pass=False))
    print(markdown_table(header, rows))
    print()
    print(f"slides read with: SVS {svs_reader}; NDPI {ndpi_reader}")
    tiles50 = cut(svs, 50)[0]
    tiles224 = cut(svs, 224)[0]
    if args.models:
        print()
        print(model_table(args.models))
    print()
    print(
        f"speed: {speed(tiles50):,.0f} tiles/s at 50x50, {speed(tiles224):,.0f} tiles/s at "
        f"224x224 (one process, numpy, {len(tiles50)} and {len(tiles224)} SVS tiles)"
    )


if __name__ == "__main__":
    main()
