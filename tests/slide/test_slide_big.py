"""A 20,480 x 20,480 slide of mostly background: tissue mask, tile grid and bounded memory.

Level 0 holds 1.26 GB of pixels; the file is a few MB (compressed tiles). Scoring every tissue
tile at level 0 must read it in small regions and stay far below that size in memory.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from breastpath.slide.reader import open_slide
from breastpath.slide.synthetic import default_blobs, write_synthetic_slide
from breastpath.slide.tiff_reader import TiffReader

pytest.importorskip("tifffile")

SIZE = 20_480
LEVEL0_BYTES = SIZE * SIZE * 3


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.ome.tif"
    return write_synthetic_slide(path, size=(SIZE, SIZE), tile=512, downsamples=(1, 4, 16))


def _inside(blob, x, y) -> np.ndarray:
    return ((x - blob.cx) / blob.rx) ** 2 + ((y - blob.cy) / blob.ry) ** 2 <= 1


def test_big_slide_is_small_on_disk_and_pyramidal(big_slide):
    assert big_slide.stat().st_size < 40 * 2**20
    with open_slide(big_slide) as slide:
        assert slide.dimensions == (SIZE, SIZE)
        assert [lv.downsample for lv in slide.levels] == [1.0, 4.0, 16.0]


def test_tissue_grid_and_bounded_memory(big_slide, trained_run, tmp_path, monkeypatch):
    from breastpath.inference.predictor import Predictor
    from breastpath.slide.analyze import analyze_slide

    regions: list[tuple[int, int]] = []  # (level, pixels) of every region read
    read_region = TiffReader.read_region

    def spy(self, location, level, size):
        regions.append((level, int(size[0]) * int(size[1])))
        return read_region(self, location, level, size)

    monkeypatch.setattr(TiffReader, "read_region", spy)
    predictor = Predictor.from_checkpoint(trained_run, device="cpu")
    tracemalloc.start()
    try:
        result = analyze_slide(big_slide, predictor, out_dir=tmp_path, level=0, workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # memory: numpy/Python peak and the largest region ever read, against level 0
    assert peak < LEVEL0_BYTES / 10, f"peak {peak / 2**20:.0f} MiB"
    assert max(n for _, n in regions) <= 2048 * 2048  # the thumbnail's blocks at most
    assert max(n for level, n in regions if level == 0) <= 1000 * 1000  # 20 x 20 tiles
    # tissue mask: the two ellipses, under 1% of the slide
    blobs = default_blobs(SIZE, SIZE)
    ellipse_share = sum(np.pi * b.rx * b.ry for b in blobs) / SIZE**2
    assert result.tissue.fraction == pytest.approx(ellipse_share, rel=0.1)
    assert ellipse_share < 0.01
    # grid: 50-px tiles at level 0 on the tissue only
    grid = result.grid
    assert (grid.n_rows, grid.n_cols) == (SIZE // 50 + 1, SIZE // 50 + 1)
    area_tiles = ellipse_share * SIZE**2 / 50**2
    assert 0.9 * area_tiles < len(grid) < 1.2 * area_tiles
    assert result.scores.scored.mean() > 0.9  # the rest: ellipse-edge tiles, mostly glass
    assert np.isfinite(result.probabilities[result.scores.scored]).all()
    assert {p.name for p in result.paths.values()} == {
        "heatmap.png",
        "tissue.png",
        "tiles.csv",
        "tiles.geojson",
        "slide.json",
    }


def test_default_model_heatmap_points_at_the_tumour(big_slide):
    from breastpath.inference.predictor import Predictor
    from breastpath.slide.analyze import analyze_slide

    predictor = Predictor.from_checkpoint("default", device="cpu")
    result = analyze_slide(big_slide, predictor, mpp=1.0)  # level 1, 200 level-0 px per tile
    assert result.info["tiling"]["level"] == 1 and result.grid.resolution.step == 200
    grid, probs = result.grid, result.probabilities
    blobs = default_blobs(SIZE, SIZE)
    tumor = _inside(blobs[1], grid.x + 100, grid.y + 100)
    normal = _inside(blobs[0], grid.x + 100, grid.y + 100)
    assert tumor.sum() > 20 and normal.sum() > 20
    assert np.nanmean(probs[tumor]) > np.nanmean(probs[normal]) + 0.1
    verdict = result.verdict
    assert verdict.positive is not None and verdict.tiles_assessed == np.isfinite(probs).sum()
    assert verdict.tiles_called == (probs >= verdict.threshold).sum()
    assert result.info["stats"]["top_k_mean"] >= np.sort(probs[np.isfinite(probs)])[-20:].min()
