"""The quality gate's fast batch path (issue 28, item 4) gives exactly the gate's verdicts.

``pixel_classes`` was rewritten for speed (per-channel lookups, no ``axis=-1`` reductions,
uint8 bit arithmetic) and gained the ``PLAIN_TISSUE`` bit; ``ColourTable`` caches it per
colour; ``assess_batch`` (the tile check's path) computes the gate's reasons and the tissue
share from one lookup per pixel. Each is checked here against the form it replaces.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from breastpath.inference import quality
from breastpath.inference.tiles import TileCheck
from breastpath.tissue import luminance, luminance_threshold, od_table
from conftest import synthetic_patch

_SQRT_HALF = np.float32(np.sqrt(0.5))
_SQRT_SIXTH = np.float32(np.sqrt(1.0 / 6.0))


def reference_classes(pixels: np.ndarray, options: quality.GateOptions) -> np.ndarray:
    """``pixel_classes`` as it was before the fast path (DARK, TISSUE, FOREIGN), plus the
    tile check's own tissue test (luminosity below 0.8) as PLAIN_TISSUE."""
    y = luminance(pixels)
    dark = y < luminance_threshold(options.min_luminosity)
    tissue = (y < luminance_threshold(options.max_luminosity)) & ~dark
    od = od_table(256.0)[pixels]
    scale = 1.0 / np.maximum(od.sum(axis=-1), np.float32(1e-6))
    red, green, blue = od[..., 0] * scale, od[..., 1] * scale, od[..., 2] * scale
    x = (red - green) * _SQRT_HALF
    z = (red + green - 2.0 * blue) * _SQRT_SIXTH
    hue = np.degrees(np.arctan2(z, x)) % 360.0
    low, high = options.hue_range
    off_hue = (np.hypot(x, z) >= options.min_chroma) & ((hue < low) | (hue > high))
    foreign = tissue & (off_hue | (od.max(axis=-1) > options.max_od))
    plain = y < luminance_threshold(0.8)
    return (dark * 1 | tissue * 2 | foreign * 4 | plain * 8).astype(np.uint8)


def reference_check(tiles: np.ndarray, *, min_tissue: float = 0.25) -> np.ndarray:
    """The tile check as it was: ``assess`` per chunk of 64, then the luminance tissue share."""
    names = {
        quality.REASON_OK: "",
        quality.REASON_DARK: "dark",
        quality.REASON_BACKGROUND: "background",
        quality.REASON_NO_TEXTURE: "no_texture",
    }
    reasons = np.full(len(tiles), "", dtype=object)
    for start in range(0, len(tiles), 64):
        verdicts = quality.assess(tiles[start : start + 64])
        reasons[start : start + len(verdicts)] = [names.get(q.reason, "not_he") for q in verdicts]
    y = luminance(tiles).reshape(len(tiles), -1)
    share = (y < luminance_threshold(0.8)).mean(axis=1)
    reasons[(reasons == "") & (share < min_tissue)] = "background"
    return reasons


def _colours(step: int) -> np.ndarray:
    codes = np.arange(0, 1 << 24, step, dtype=np.int32)
    return np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8)


OPTIONS = [
    quality.GateOptions(),
    quality.GateOptions(max_luminosity=0.95, hue_range=(60.0, 230.0), min_chroma=0.1, max_od=2.0),
]


@pytest.mark.parametrize("options", OPTIONS)
def test_pixel_classes_equal_the_reference_on_a_sweep_of_colours(options):
    pixels = _colours(61)  # 275,000 colours spread over the cube
    assert np.array_equal(
        quality.pixel_classes(pixels, options), reference_classes(pixels, options)
    )


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS)
def test_pixel_classes_equal_the_reference_on_every_colour(options):
    for start in range(0, 1 << 24, 1 << 21):
        codes = np.arange(start, start + (1 << 21), dtype=np.int32)
        pixels = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], -1).astype(np.uint8)
        got, want = quality.pixel_classes(pixels, options), reference_classes(pixels, options)
        assert np.array_equal(got, want), f"colours {start:#08x}..: {int((got != want).sum())}"


def test_the_colour_table_gives_pixel_classes_from_several_threads():
    options = quality.GateOptions(min_chroma=0.05)  # its own table
    table = quality.ColourTable(options, warm_pixels=0)
    rng = np.random.default_rng(4)
    batches = [rng.integers(0, 256, (40_000, 3), dtype=np.uint8) for _ in range(6)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = table.classes(batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, batch in enumerate(batches):
        assert np.array_equal(results[i], quality.pixel_classes(batch, options))
        assert np.array_equal(table.classes(batch), results[i])  # now from the table


def test_the_colour_table_classifies_directly_until_warm():
    table = quality.ColourTable(quality.GateOptions(), warm_pixels=10_000)
    pixels = np.full((5_000, 3), 128, np.uint8)
    table.classes(pixels)
    assert table._table[128 << 16 | 128 << 8 | 128] == 255  # not filled yet
    table.classes(pixels)
    table.classes(pixels)  # past warm_pixels: filled and used
    assert table._table[128 << 16 | 128 << 8 | 128] != 255


def _generated_tiles() -> np.ndarray:
    rng = np.random.default_rng(28)
    tiles = [synthetic_patch(rng, i % 2) for i in range(40)]
    tiles += [
        np.full((50, 50, 3), c, np.uint8) for c in ((241, 235, 238), (0, 0, 0), (230, 140, 190))
    ]
    tiles += [rng.integers(0, 256, (50, 50, 3), dtype=np.uint8) for _ in range(4)]
    half = synthetic_patch(rng, 1).copy()
    half[:, :30] = 245  # mostly glass: the tile check's own background rule
    return np.stack([*tiles, half])


@pytest.mark.parametrize("warm", [False, True])
def test_the_tile_check_equals_the_gate_tile_by_tile(warm, monkeypatch):
    if warm:
        monkeypatch.setattr(
            quality, "colour_table", lambda o: quality.ColourTable(o, warm_pixels=0)
        )
    tiles = _generated_tiles()
    assert TileCheck()(tiles).tolist() == reference_check(tiles).tolist()
    reasons, _ = quality.assess_batch(tiles)
    assert reasons.tolist() == [q.reason for q in quality.assess(tiles)]


@pytest.mark.data
def test_the_tile_check_equals_the_gate_on_real_tiles(shared_data, monkeypatch):
    """Real SVS tiles (every tile touching the mask) and IDC patches: the same verdicts, with
    the table and without it (a measured disagreement of 0)."""
    from breastpath.slide.reader import open_slide
    from breastpath.slide.tiling import iter_tiles, make_grid, resolve_resolution
    from breastpath.slide.tissue import detect_tissue

    with open_slide(shared_data / "wsi" / "CMU-1-Small-Region.svs") as slide:
        resolution = resolve_resolution(slide, tile_size=50, level=0)
        grid = make_grid(slide, detect_tissue(slide), resolution=resolution, min_tissue=0.0)
        svs = np.concatenate([tiles for _, tiles in iter_tiles(slide, grid, workers=0)])
    files = sorted((shared_data / "idc").glob("*/*/*.png"))[::4]
    idc = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    idc_tiles = np.stack([im for im in idc if im.shape == (50, 50, 3)])
    for tiles in (svs, idc_tiles):
        want = reference_check(tiles).tolist()
        assert TileCheck()(tiles).tolist() == want
        monkeypatch.setattr(
            quality, "colour_table", lambda o: quality.ColourTable(o, warm_pixels=0)
        )
        assert TileCheck()(tiles).tolist() == want
        monkeypatch.undo()


def test_a_filled_colour_table_gives_assess_the_same_verdicts(monkeypatch):
    """Once ``class_table`` is filled (a server fills it in a thread), ``assess`` classifies
    every image, small ones included, through it: the same verdicts and measures as before."""
    rng = np.random.default_rng(3)
    images = [*_generated_tiles(), rng.integers(0, 256, (37, 61, 3), dtype=np.uint8)]
    want = quality.assess(images) + [quality.assess([im])[0] for im in images]
    table = quality.ColourTable(quality.GateOptions(), warm_pixels=0)
    monkeypatch.setitem(quality._COMPLETE, quality.GateOptions(), table)
    got = quality.assess(images) + [quality.assess([im])[0] for im in images]
    assert got == want
    assert (table._table != table._UNFILLED).any()  # the table was used
    other = quality.GateOptions(min_contrast=5.0)  # other thresholds: not this table
    assert quality.pixel_measures(images[0][None].reshape(1, -1, 3), other)["tissue"].size == 1


def test_reasons_are_the_first_rule_failed():
    rng = np.random.default_rng(0)
    masks = {k: rng.random(500) < 0.5 for k in ("too_dark", "is_tissue", "looks_like_he")}
    masks["textured"] = rng.random(500) < 0.5
    want = np.select(
        [masks["too_dark"], ~masks["is_tissue"], ~masks["looks_like_he"], ~masks["textured"]],
        [
            quality.REASON_DARK,
            quality.REASON_BACKGROUND,
            quality.REASON_NOT_HE,
            quality.REASON_NO_TEXTURE,
        ],
        default=quality.REASON_OK,
    )
    got = quality.reasons_of(masks)
    assert got.dtype == object and got.tolist() == want.tolist()
