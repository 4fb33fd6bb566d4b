"""Tissue detection: Otsu on saturation or optical density, morphology, region shares."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from breastpath.errors import SlideError
from breastpath.slide.synthetic import Blob, render
from breastpath.slide.tissue import (
    TissueMask,
    clean_mask,
    otsu_threshold,
    tissue_mask,
    tissue_signal,
)

BLOBS = [Blob(120, 100, 60, 40, "normal"), Blob(300, 200, 50, 70, "tumor")]
SHAPE = (300, 400)


def _ellipses() -> np.ndarray:
    ys, xs = np.mgrid[: SHAPE[0], : SHAPE[1]] + 0.5
    truth = np.zeros(SHAPE, dtype=bool)
    for b in BLOBS:
        truth |= ((xs - b.cx) / b.rx) ** 2 + ((ys - b.cy) / b.ry) ** 2 <= 1
    return truth


def _thumbnail(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = render(0, 0, SHAPE, downsample=1.0, blobs=BLOBS, rng=rng)
    noise = rng.normal(0, 3, (*SHAPE, 3))  # a slightly noisy, off-white glass background
    background = np.clip(240 + noise, 0, 255).astype(np.uint8)
    return np.where(_ellipses()[..., None], image, background)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_otsu_splits_two_modes():
    rng = np.random.default_rng(0)
    low, high = rng.normal(0.1, 0.02, 5000), rng.normal(0.6, 0.05, 500)
    t = otsu_threshold(np.r_[low, high])
    assert (low > t).mean() < 0.01 and (high < t).mean() < 0.01
    assert otsu_threshold(np.full(10, 0.3)) == 0.3
    with pytest.raises(SlideError):
        otsu_threshold(np.array([]))


@pytest.mark.parametrize("method", ["saturation", "od"])
def test_mask_finds_the_tissue(method):
    mask, threshold = tissue_mask(_thumbnail(), method=method)
    assert mask.dtype == bool and mask.shape == SHAPE
    assert _iou(mask, _ellipses()) > 0.95
    signal = tissue_signal(_thumbnail(), method=method)
    assert signal[~_ellipses()].max() < threshold < np.median(signal[_ellipses()])


@pytest.mark.parametrize("method", ["saturation", "od"])
def test_blank_slide_has_no_tissue(method):
    rng = np.random.default_rng(0)
    blank = np.clip(240 + rng.normal(0, 3, (*SHAPE, 3)), 0, 255).astype(np.uint8)
    mask, _ = tissue_mask(blank, method=method)
    assert not mask.any()


def test_morphology_removes_specks_and_keeps_holes():
    mask = np.zeros((60, 60), dtype=bool)
    mask[10:40, 10:40] = True
    mask[20:23, 20:23] = False  # a hole: holes are never filled
    mask[50, 50] = True  # a speck
    cleaned = clean_mask(mask, radius=1, min_area=16)
    assert not cleaned[20:23, 20:23].any()
    assert not cleaned[45:, 45:].any()
    assert cleaned.sum() == 900 - 9


@pytest.mark.parametrize("method", ["saturation", "od"])
def test_glass_hole_inside_tissue_stays_out_of_the_mask(method):
    rng = np.random.default_rng(3)
    image = _thumbnail()
    ys, xs = np.mgrid[: SHAPE[0], : SHAPE[1]] + 0.5
    hole = ((xs - 120) / 20) ** 2 + ((ys - 100) / 15) ** 2 <= 1  # inside the first ellipse
    glass = np.clip(np.array([241, 235, 238]) + rng.normal(0, 2.6, (int(hole.sum()), 3)), 0, 255)
    image[hole] = glass.astype(np.uint8)
    small = (np.abs(xs - 300) <= 1.5) & (np.abs(ys - 200) <= 1.5)  # a 3x3 lumen: closing-sized
    image[small] = (244, 240, 242)
    mask, _ = tissue_mask(image, method=method, radius=2)
    assert not mask[hole].any() and not mask[small].any()
    assert _iou(mask, _ellipses() & ~hole & ~small) > 0.95


def test_numpy_fallback_without_scipy(monkeypatch):
    expected, _ = tissue_mask(_thumbnail())
    monkeypatch.setitem(sys.modules, "scipy", None)
    mask, _ = tissue_mask(_thumbnail())
    assert _iou(mask, expected) > 0.97


def test_region_fraction():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, :5] = True
    tissue = TissueMask(mask, (4.0, 4.0), 0.1, "saturation", np.zeros((10, 10, 3), np.uint8))
    share = tissue.region_fraction(
        np.array([0, 0, 20, 16, 18.5]),
        np.array([0, 0, 0, 0, 0]),
        np.array([40, 20, 40, 24, 19.5]),
        np.array([40, 40, 40, 4, 1]),
    )
    # whole image, left half, right half, a 4 px box straddling the edge, a sub-pixel box
    np.testing.assert_allclose(share, [0.5, 1.0, 0.0, 0.5, 1.0])


def test_bad_method_is_a_named_error():
    with pytest.raises(SlideError, match="unknown tissue method"):
        tissue_mask(_thumbnail(), method="hsv")
