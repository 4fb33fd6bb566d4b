"""The one tissue definition (breastpath.tissue) and the callers that share it."""

from __future__ import annotations

import numpy as np
import pytest

from breastpath import tissue
from breastpath.errors import InvalidImageError
from breastpath.inference.tiles import TileCheck, cut_tiles
from breastpath.stain import _ops
from breastpath.stain._backend import ops_for


def _pixels(count: int = 100_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    return np.concatenate([greys, rng.integers(0, 256, (count, 3), dtype=np.uint8)])


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
def test_stain_code_uses_the_same_tissue_rule(threshold):
    pixels = _pixels()
    ours = tissue.tissue_pixels(pixels, max_luminosity=threshold)
    stain = _ops.tissue_mask(ops_for(pixels), pixels[None], threshold)[0]
    np.testing.assert_array_equal(ours, stain)
    torch = pytest.importorskip("torch")
    tensor = torch.from_numpy(pixels[None])
    on_torch = _ops.tissue_mask(ops_for(tensor), tensor, threshold)[0].numpy()
    np.testing.assert_array_equal(ours, on_torch)


def test_the_rule_is_cie_luminosity():
    # grey v is tissue below L* = 80, which is v = 198.6 in sRGB
    greys = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    assert np.flatnonzero(~tissue.tissue_pixels(greys))[0] == 199
    dark = tissue.tissue_pixels(greys, min_luminosity=0.1)
    assert not dark[:20].any() and dark[40:199].all()


def test_fraction_and_background_of_images_and_batches():
    glass = np.full((50, 50, 3), (241, 235, 238), np.uint8)
    pink = np.full((50, 50, 3), (200, 120, 170), np.uint8)
    half = pink.copy()
    half[:25] = glass[:25]
    assert tissue.tissue_fraction(half) == 0.5
    batch = np.stack([glass, pink, half])
    np.testing.assert_array_equal(tissue.tissue_fraction(batch), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(tissue.is_background(batch), [True, False, False])
    assert tissue.is_background(glass) is True
    assert tissue.tissue_fraction(np.zeros((0, 5, 3), np.uint8)) == 0.0


def test_the_tile_check_counts_tissue_with_the_same_rule():
    image = np.full((100, 100, 3), 245, np.uint8)
    image[:50, :50] = (200, 120, 170)
    image[50:, 50:, :] = 199  # just above L* 80: background under the shared rule
    grid = cut_tiles(image, (50, 50)).check(TileCheck(he_check=False))
    assert grid.assessed.tolist() == [[True, False], [False, False]]
    assert tissue.tissue_fraction(grid.tiles[3]) == 0.0


def test_optical_density_and_bad_input():
    od = tissue.optical_density(np.array([[255, 127, 0]], np.uint8))
    np.testing.assert_allclose(od, [[0.0, np.log(2.0), np.log(256.0)]], rtol=1e-6)
    with pytest.raises(InvalidImageError):
        tissue.tissue_pixels(np.zeros((4, 4), np.uint8))
    with pytest.raises(InvalidImageError):
        tissue.tissue_fraction(np.zeros((4, 4, 3), np.float64))
