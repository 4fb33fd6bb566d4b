"""A slide with a glass hole inside its tissue: no glass tile is scored, so none can reach the
top of the slide score, even for a model that likes bright tiles best (as real IDC models do:
on a real slide with a hole, blank glass scored about 0.99)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from breastpath.slide.analyze import analyze_slide
from breastpath.slide.synthetic import Blob, write_synthetic_slide

pytest.importorskip("tifffile")

TISSUE = Blob(1200, 1000, 900, 700, "normal")
HOLE = Blob(1200, 1000, 350, 250, "glass")  # a large hole: whole tiles of glass
LUMEN = Blob(600, 1000, 60, 60, "glass")  # a small one: partial tiles
GLASS_MEAN = np.array([241, 235, 238])


class BrightnessPredictor:
    """A model that scores a tile by its brightness: glass would win every top-k slot."""

    input_size = (50, 50)
    threshold = 0.5
    meta = None

    def describe(self) -> dict:
        return {"name": "brightness", "dataset": None}

    def prepare(self, images):
        return np.stack(list(images))

    def predict_proba(self, batch):
        bright = batch.reshape(len(batch), -1).mean(axis=1) / 255.0
        return np.stack([1 - bright, bright], axis=1)

    def cancer_probability(self, probs):
        return probs[:, 1]

    def verdict_rule(self, *, threshold=None, unit="tile"):
        from breastpath.inference.verdict import VerdictRule

        cutoff = self.threshold if threshold is None else threshold
        return VerdictRule(reduction="presence", threshold=cutoff, unit=unit)


@pytest.fixture(scope="module")
def holed_slide(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("glass") / "holed.ome.tif"
    return write_synthetic_slide(
        path, size=(2400, 2000), tile=256, downsamples=(1, 4), blobs=[TISSUE, HOLE, LUMEN]
    )


def _inside(blob: Blob, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return ((x - blob.cx) / blob.rx) ** 2 + ((y - blob.cy) / blob.ry) ** 2 <= 1


def _glass_share(x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Share of each tile's area inside the hole or the lumen (sampled on a 10 x 10 grid)."""
    offsets = (np.arange(10) + 0.5) * size / 10
    sx = x[:, None, None] + offsets[None, None, :]
    sy = y[:, None, None] + offsets[None, :, None]
    glass = _inside(HOLE, sx, sy) | _inside(LUMEN, sx, sy)
    return glass.mean(axis=(1, 2))


def test_no_top_scoring_tile_is_glass(holed_slide, tmp_path):
    result = analyze_slide(
        holed_slide, BrightnessPredictor(), out_dir=tmp_path, level=0, top_k=20, workers=0
    )
    grid, scores = result.grid, result.scores
    probs = scores.probabilities
    glass = _glass_share(grid.x, grid.y, 50)
    scored = scores.scored
    assert scored.sum() > 300
    # whole-glass tiles are never scored (most never read: the mask has the hole)
    assert not (scored & (glass > 0.9)).any()
    top = np.argsort(np.where(scored, probs, -1.0))[-20:]
    assert (glass[top] < 0.75).all(), glass[top]
    # and the read tiles that were mostly glass are in tiles.csv with a reason
    with open(result.paths["tiles"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    reasons = {r["skipped"] for r in rows}
    assert {"", "mask"} <= reasons and reasons <= {"", "mask", "background"}
    for row in rows:
        assert (row["probability"] == "") == (row["skipped"] != "")
    # the hole's centre tile is glass at full resolution: never in the scored set
    centre = _inside(Blob(HOLE.cx, HOLE.cy, 150, 100), grid.x + 25, grid.y + 25)
    assert not scored[centre].any()


def test_glass_pixels_really_look_like_glass(holed_slide):
    from breastpath.slide.reader import open_slide

    with open_slide(holed_slide) as slide:
        patch = slide.read_region((int(HOLE.cx) - 25, int(HOLE.cy) - 25), 0, (50, 50))
    assert np.abs(patch.reshape(-1, 3).mean(axis=0) - GLASS_MEAN).max() < 2
    assert patch.std() < 4


def test_default_model_top_tiles_are_tissue(holed_slide):
    from breastpath.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint("default", device="cpu")
    result = analyze_slide(holed_slide, predictor, mpp=0.5, workers=0)  # 100 px -> 50 px
    grid, scores = result.grid, result.scores
    glass = _glass_share(grid.x, grid.y, int(grid.resolution.step))
    top = np.argsort(np.where(scores.scored, scores.probabilities, -1.0))[-20:]
    assert scores.scored[top].all() and (glass[top] < 0.75).all()
