"""The model-bound slide pipeline (issue 28, item 4) gives what the serial pipeline gave.

The speedups (tile checks in the reader threads on the colour table, integer thumbnail
reduction, opaque RGBA regions, a cohort preparing its next slide while the model scores)
must not change one verdict or probability: each is checked here against the serial path
it replaced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_slide_tiling import DarknessPredictor

from breastpath.inference import quality
from breastpath.inference.stages import StageClock
from breastpath.inference.tiles import TileCheck, score_tiles
from breastpath.slide.reader import box_mean, open_slide, to_rgb
from breastpath.slide.synthetic import Blob, write_synthetic_slide
from breastpath.slide.tiling import iter_tiles, make_grid, resolve_resolution, score_grid
from breastpath.slide.tissue import detect_tissue

pytest.importorskip("tifffile")

BLOBS = [
    Blob(900, 700, 500, 400, "normal"),
    Blob(2200, 1400, 450, 500, "tumor"),
    Blob(900, 700, 150, 120, "glass"),
]


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    return write_synthetic_slide(
        root / "p.tif", size=(3000, 2200), downsamples=(1, 4), blobs=BLOBS, pyramid="pages"
    )


@pytest.mark.parametrize(("level", "mpp"), [(0, None), (None, 2.0)])
@pytest.mark.parametrize("warm", [False, True])
def test_checks_in_reader_threads_give_the_serial_scores(slide_path, level, mpp, warm, monkeypatch):
    if warm:  # the colour table from the first pixel
        monkeypatch.setattr(
            quality, "colour_table", lambda o: quality.ColourTable(o, warm_pixels=0)
        )
    with open_slide(slide_path) as slide:
        resolution = resolve_resolution(slide, tile_size=50, level=level, mpp=mpp)
        grid = make_grid(slide, detect_tissue(slide), resolution=resolution, min_tissue=0.1)
        serial = score_tiles(
            DarknessPredictor(), iter_tiles(slide, grid, workers=0), total=len(grid),
            check=TileCheck(), batch_size=64,
        )  # fmt: skip
        clock = StageClock()
        threaded = score_grid(slide, grid, DarknessPredictor(), batch_size=48, clock=clock)
    assert threaded.skipped.tolist() == serial.skipped.tolist()
    np.testing.assert_array_equal(threaded.probabilities, serial.probabilities)
    assert set(serial.counts()) > {"scored"}  # glass and edges were skipped
    assert {"read", "check", "model"} <= set(clock.seconds())
    assert ("resample" in clock.seconds()) == (mpp is not None)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5, 16, 17])
def test_box_mean_is_the_rounded_float_mean(factor):
    rng = np.random.default_rng(factor)
    block = rng.integers(0, 256, (factor * 7, factor * 9, 3), dtype=np.uint8)
    block[: factor * 2] = rng.integers(0, 2, (factor * 2, factor * 9, 3)) * 255  # many ties
    means = block.reshape(7, factor, 9, factor, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(box_mean(block, factor), np.round(means).astype(np.uint8))


def test_opaque_rgba_is_its_rgb_and_alpha_still_composites():
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    np.testing.assert_array_equal(to_rgb(rgba), rgba[..., :3])
    rgba[0, 0, 3] = 0
    assert to_rgb(rgba)[0, 0].tolist() == [255, 255, 255]


def test_a_cohort_prepares_ahead_and_gives_each_slide_its_own_result(tmp_path):
    """Slides prepared ahead (one of them broken, one without tissue) give the rows and
    tiles.csv that scoring each slide alone gives."""
    from breastpath.inference.predictor import Predictor
    from breastpath.slide.analyze import analyze_slide
    from breastpath.slide.cohort import CohortOptions, run_cohort
    from breastpath.slide.sources import discover

    folder = tmp_path / "slides"
    folder.mkdir()
    for i in range(3):
        write_synthetic_slide(
            folder / f"s{i}.tif", size=(1600, 1200), downsamples=(1, 4), pyramid="pages",
            blobs=[Blob(600 + 200 * i, 500, 350, 300, "tumor" if i % 2 else "normal")], seed=i,
        )  # fmt: skip
    (folder / "s1b.tif").write_bytes(b"not a slide")
    write_synthetic_slide(folder / "s9.tif", size=(800, 600), downsamples=(1,), blobs=[])
    clock, predictor = StageClock(), Predictor.from_checkpoint("default")
    options = CohortOptions(level=0, batch_size=40)
    rows = run_cohort(discover([folder]), predictor, out_dir=tmp_path / "out", options=options,
                      clock=clock)  # fmt: skip
    status = {r["slide"]: r["status"].split(":")[0] for r in rows}
    assert status == {
        "s0": "scored",
        "s1": "scored",
        "s1b": "error",
        "s2": "scored",
        "s9": "skipped",
    }
    for i in range(3):
        alone = analyze_slide(folder / f"s{i}.tif", predictor, level=0,
                              out_dir=tmp_path / f"alone{i}")  # fmt: skip
        cohort_csv = (tmp_path / "out" / f"s{i}" / "tiles.csv").read_text()
        assert cohort_csv == (tmp_path / f"alone{i}" / "tiles.csv").read_text()
        row = next(r for r in rows if r["slide"] == f"s{i}")
        assert row["verdict"] == alone.verdict.label and row["backend"] == "tifffile"
    assert {"open_and_mask", "read", "check", "model"} <= set(clock.seconds())


def test_saturation_signal_equals_the_channel_reduction():
    from breastpath.slide.tissue import tissue_signal

    rgb = np.random.default_rng(3).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    rgb[0] = 0
    high, low = rgb.max(axis=2).astype(np.float32), rgb.min(axis=2).astype(np.float32)
    want = np.where(high > 0, (high - low) / np.maximum(high, 1.0), 0.0).astype(np.float32)
    np.testing.assert_array_equal(tissue_signal(rgb), want)
