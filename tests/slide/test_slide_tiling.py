"""Tile grid, lazy block reads, batched scoring and the slide score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from breastpath.errors import SlideError
from breastpath.slide.heatmap import overlay, paint_grid, probability_grid, slide_stats
from breastpath.slide.reader import open_slide
from breastpath.slide.synthetic import Blob, write_synthetic_slide
from breastpath.slide.tiling import iter_tiles, make_grid, resolve_resolution, score_grid
from breastpath.slide.tissue import detect_tissue

pytest.importorskip("tifffile")

BLOBS = [Blob(600, 500, 300, 250, "normal"), Blob(1500, 1000, 250, 300, "tumor")]


class DarknessPredictor:
    """A stand-in model: probability = darkness of the tile (1 - mean / 255)."""

    input_size = (50, 50)
    threshold = 0.5

    def __init__(self) -> None:
        self.batches: list[int] = []

    def prepare(self, images):
        return np.stack(list(images))

    def predict_proba(self, batch):
        self.batches.append(len(batch))
        dark = 1.0 - batch.reshape(len(batch), -1).mean(axis=1) / 255.0
        return np.stack([1 - dark, dark], axis=1)

    def cancer_probability(self, probs):
        return probs[:, 1]


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiling")
    return write_synthetic_slide(
        root / "s.ome.tif", size=(2000, 1500), tile=256, downsamples=(1, 4), blobs=BLOBS
    )


def _inside(blob: Blob, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x - blob.cx) / blob.rx) ** 2 + ((y - blob.cy) / blob.ry) ** 2 <= 1


def test_resolution_by_level_and_mpp(slide_path):
    with open_slide(slide_path) as slide:  # 0.25 um/px, levels 1x and 4x
        res = resolve_resolution(slide, tile_size=50, level=1)
        assert (res.level, res.read_size, res.step, res.mpp) == (1, 50, 200.0, 1.0)
        res = resolve_resolution(slide, tile_size=50, mpp=4.0)  # 16x: level 1, 200 px -> 50
        assert (res.level, res.read_size, res.step) == (1, 200, 800.0)
        assert res.mpp == pytest.approx(4.0)
        res = resolve_resolution(slide, tile_size=50, mpp=0.5)  # 2x: level 0, 100 px -> 50
        assert (res.level, res.read_size) == (0, 100)
        with pytest.raises(SlideError, match="not both"):
            resolve_resolution(slide, tile_size=50, level=0, mpp=1.0)
        with pytest.raises(SlideError, match="no level 3"):
            resolve_resolution(slide, tile_size=50, level=3)


def test_grid_keeps_tissue_tiles_only(slide_path):
    with open_slide(slide_path) as slide:
        tissue = detect_tissue(slide, max_size=600)
        grid = make_grid(slide, tissue, resolution=resolve_resolution(slide, tile_size=50))
    assert (grid.n_rows, grid.n_cols) == (30, 40)
    cx, cy = grid.x + 25, grid.y + 25
    near = [Blob(b.cx, b.cy, b.rx + 36, b.ry + 36) for b in BLOBS]  # touches the blob
    assert (_inside(near[0], cx, cy) | _inside(near[1], cx, cy)).all()
    inner = [Blob(b.cx, b.cy, b.rx - 36, b.ry - 36) for b in BLOBS]  # wholly tissue
    ys, xs = np.mgrid[:30, :40] * 50 + 25
    wanted = _inside(inner[0], xs, ys) | _inside(inner[1], xs, ys)
    kept = np.zeros((30, 40), dtype=bool)
    kept[grid.rows, grid.cols] = True
    assert kept[wanted].all() and wanted.sum() > 100
    area = sum(np.pi * b.rx * b.ry for b in BLOBS) / 50**2
    assert 0.9 * area < len(grid) < 1.2 * area
    assert (grid.tissue >= 0.25).all()
    rows = grid.records()
    assert rows[0].keys() >= {"x", "y", "size", "level", "tissue", "skipped"}
    assert rows[0]["size"] == 50 and rows[0]["skipped"] == ""
    low = [r for r in rows if r["skipped"] == "mask"]  # touch the mask, below min_tissue
    assert len(low) == len(grid.low_rows) > 0 and all(0 < r["tissue"] < 0.25 for r in low)


def test_tiles_are_read_lazily_and_match_direct_reads(slide_path):
    with open_slide(slide_path) as slide:
        tissue = detect_tissue(slide, max_size=600)
        res = resolve_resolution(slide, tile_size=50, mpp=0.5)  # resampled 100 -> 50
        grid = make_grid(slide, tissue, resolution=res)
        seen = np.zeros(len(grid), dtype=int)
        for workers in (0, 2):
            for index, tiles in iter_tiles(slide, grid, workers=workers, block=400):
                assert tiles.shape == (len(index), 50, 50, 3)
                seen[index] += 1
                for i, tile in zip(index[:3], tiles[:3], strict=False):
                    direct = slide.read_region((int(grid.x[i]), int(grid.y[i])), 0, (100, 100))
                    expected = direct.reshape(50, 2, 50, 2, 3).mean(axis=(1, 3))
                    assert np.abs(tile.astype(float) - expected).max() <= 1
        assert (seen == 2).all()  # every kept tile exactly once per pass


def test_scores_land_on_their_tiles(slide_path):
    model = DarknessPredictor()
    with open_slide(slide_path) as slide:
        tissue = detect_tissue(slide, max_size=600)
        grid = make_grid(slide, tissue, resolution=resolve_resolution(slide, tile_size=50))
        done = []
        scores = score_grid(slide, grid, model, batch_size=64, workers=2, progress=done.append)
        probs, scored = scores.probabilities, scores.scored
        for i in np.random.default_rng(0).choice(np.flatnonzero(scored), 20, replace=False):
            tile = slide.read_region((int(grid.x[i]), int(grid.y[i])), 0, (50, 50))
            assert probs[i] == pytest.approx(1 - tile.mean() / 255)
    assert sum(done) == len(grid) and len(done) == len(model.batches) > 1
    # skipped tiles (mask edge, mostly glass at full resolution) have a reason and no score
    assert np.isnan(probs[~scored]).all() and set(scores.skipped[~scored]) <= {"background"}
    assert scores.counts()["scored"] == scored.sum() > 0.9 * len(grid)
    tumor = _inside(BLOBS[1], grid.x + 25, grid.y + 25)
    assert np.nanmean(probs[tumor]) > np.nanmean(probs[~tumor]) + 0.1


def test_blank_slide_is_a_named_error(tmp_path):
    path = write_synthetic_slide(tmp_path / "blank.tif", size=(1024, 1024), tile=256, blobs=[])
    with open_slide(path) as slide:
        tissue = detect_tissue(slide)
        with pytest.raises(SlideError, match="no tissue found"):
            make_grid(slide, tissue, resolution=resolve_resolution(slide, tile_size=50))


def test_slide_stats_describe_the_scored_tiles_only():
    probs = np.array([0.1, 0.2, 0.95, 0.9, 0.3, np.nan])
    stats = slide_stats(probs, top_k=2)
    assert stats["tiles"] == 5 and stats["top_k"] == 2
    assert stats["top_k_mean"] == pytest.approx(0.925) and stats["max"] == pytest.approx(0.95)
    assert slide_stats(np.array([0.1, 0.2]), top_k=20)["top_k"] == 2
    assert slide_stats(np.array([np.nan])) is None
    with pytest.raises(SlideError):
        slide_stats(probs, top_k=0)


def test_paint_and_overlay():
    values = np.array([[0.0, np.nan], [1.0, 0.5]])
    big = paint_grid(values, cell=(3, 2), shape=(4, 6))  # cells bigger than pixels
    assert big[0, 0] == 0.0 and np.isnan(big[1, 5]) and big[3, 4] == 0.5
    small = paint_grid(np.full((4, 4), 0.25), cell=(0.5, 0.5), shape=(2, 2))  # averaged
    np.testing.assert_allclose(small, 0.25)
    base = np.full((4, 6, 3), 200, dtype=np.uint8)
    out = overlay(base, big, alpha=0.5)
    assert (out[:2, 3:] == 200).all()  # NaN: untouched
    assert not (out[:2, :3] == 200).all()


def test_probability_grid_places_values(slide_path):
    with open_slide(slide_path) as slide:
        tissue = detect_tissue(slide, max_size=600)
        grid = make_grid(slide, tissue, resolution=resolve_resolution(slide, tile_size=50))
    values = probability_grid(grid, np.arange(len(grid), dtype=float))
    assert np.isfinite(values).sum() == len(grid)
    assert values[grid.rows[5], grid.cols[5]] == 5


def test_heatmap_shows_skipped_tissue_in_gray(slide_path):
    from breastpath.inference.tiles import TileScores
    from breastpath.inference.verdict import VerdictRule
    from breastpath.slide.heatmap import SKIPPED_COLOR, heatmap_figure

    with open_slide(slide_path) as slide:
        tissue = detect_tissue(slide, max_size=600)
        grid = make_grid(slide, tissue, resolution=resolve_resolution(slide, tile_size=50))
    probs = np.full(len(grid), 0.9)
    scored = TileScores(probs, np.full(len(grid), "", dtype=object))
    half = np.where(np.arange(len(grid)) % 2 == 0, "background", "").astype(object)
    skipped = TileScores(np.where(half == "", probs, np.nan), half)
    rule = VerdictRule(reduction="presence", threshold=0.5)

    def grayish(image: np.ndarray) -> int:
        pixels = image.reshape(-1, 3).astype(int)
        near = np.abs(pixels - np.array(SKIPPED_COLOR)).max(axis=1) < 60
        flat = (pixels.max(axis=1) - pixels.min(axis=1)) < 25
        return int((near & flat).sum())

    plain = heatmap_figure(tissue, grid, scored, rule.apply(scored.probabilities))
    marked = heatmap_figure(tissue, grid, skipped, rule.apply(skipped.probabilities))
    assert plain.shape == marked.shape
    assert grayish(marked) > grayish(plain) + 1000
