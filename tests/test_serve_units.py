"""Pieces of the web app on their own: tiling, aggregation, pictures, file names, error codes."""

from __future__ import annotations

import numpy as np
import pytest

from breastpath.errors import InvalidImageError
from breastpath.inference.tiles import cut_tiles, needs_tiling, stitch, tile_count, tile_summary
from breastpath.inference.verdict import VerdictRule
from breastpath.serve import render
from breastpath.serve.errors import image_error
from breastpath.serve.uploads import display_name, is_zip


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, (height, width, 3), dtype=np.uint8)


def test_tiles_cover_the_image_and_pad_the_edges():
    image = _image(120, 130)
    grid = cut_tiles(image, (50, 50))
    assert (grid.rows, grid.cols, grid.count) == (3, 3, 9)
    assert tile_count(image.shape, (50, 50)) == 9
    np.testing.assert_array_equal(grid.tiles[4], image[50:100, 50:100])
    last = grid.tiles[8]
    np.testing.assert_array_equal(last[:20, :30], image[100:, 100:])
    assert (last[20:] == 255).all() and (last[:, 30:] == 255).all()  # white padding
    rebuilt = stitch(grid.tiles[..., 0].astype(np.float32), grid)
    np.testing.assert_array_equal(rebuilt, image[..., 0])


def _stained(height: int, width: int, seed: int = 0) -> np.ndarray:
    """H&E-coloured pixels with tissue-like texture: a smooth random field, pink to purple."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(seed).random((height, width)), 2.0)
    t = (field - field.min()) / np.ptp(field)
    pink, purple = np.array([225, 150, 200]), np.array([110, 60, 150])
    return np.round(pink + t[..., None] * (purple - pink)).astype(np.uint8)


def test_when_to_tile():
    assert not needs_tiling((50, 50, 3), (50, 50))
    assert not needs_tiling((37, 50, 3), (50, 50))
    assert needs_tiling((51, 50, 3), (50, 50))
    assert needs_tiling((460, 700, 3), (224, 224))


def test_tile_summary_uses_assessed_tiles_only():
    image = np.full((100, 100, 3), 250, np.uint8)
    image[:50, :50] = _stained(50, 50)  # one tissue tile; the others are glass
    grid = cut_tiles(image, (50, 50)).check()
    rule = VerdictRule(reduction="mean", threshold=0.5, positive="cancer", negative="benign")
    out = tile_summary(grid, np.array([0.9, 0.1, 0.2, 0.3]), rule=rule)
    assert out["assessed"] == [[True, False], [False, False]]
    assert out["skipped"] == [["", "background"], ["background", "background"]]
    assert out["score"] == pytest.approx(0.9) and out["is_cancer"] is True
    assert out["label"] == "cancer" and out["extent"] == 1.0 and out["assessed_count"] == 1
    assert out["verdict"]["rule"] == rule.describe()
    blank = cut_tiles(np.full((100, 100, 3), 250, np.uint8), (50, 50)).check()
    out = tile_summary(blank, np.array([0.9, 0.1, 0.2, 0.4]), rule=rule)
    assert out["assessed_count"] == 0 and out["is_cancer"] is None
    assert out["label"] == "not assessed" and out["score"] is None and out["max"] is None


def test_display_sizes():
    assert render.display_size(50, 50) == (250, 250)
    assert render.display_size(37, 50) == (185, 250)
    assert render.display_size(460, 700) == (336, 512)
    assert render.display_size(300, 300) == (300, 300)


def test_overlay_and_heatmap_pictures():
    image = _image(50, 50)
    heat = np.zeros((50, 50), np.float32)
    plain = render.overlay(image, heat)
    np.testing.assert_array_equal(plain, render.for_display(image))
    heat[10:20, 10:20] = 1.0
    marked = render.overlay(image, heat)
    assert np.abs(marked.astype(int) - plain.astype(int)).max(axis=2)[50:100, 50:100].min() > 0
    assert (marked[200:, 200:] == plain[200:, 200:]).all()
    tiles = render.tile_heatmap(
        _image(100, 150),
        np.array([[0.1, 0.5, 0.9], [0.2, 0.3, 0.4]]),
        np.array([[True, True, True], [False, True, True]]),
        (50, 50),
    )
    assert tiles.shape == (100, 150, 3)
    png = render.png_base64(tiles)
    assert png.startswith("iVBORw0KGgo")  # base64 of the PNG signature


def test_display_names():
    assert display_name("C:\\Users\\me\\slide 1.png") == "slide 1.png"
    assert display_name("a/b/\x00evil\n.png") == "_evil_.png"
    assert display_name("", "file 3") == "file 3"
    assert len(display_name("x" * 500 + ".png")) == 120
    assert is_zip(b"PK\x03\x04rest") and not is_zip(b"\x89PNG")


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ("<b>: image is 9x9 pixels, more than the limit of 10 pixels", 413),
        ("<b>: image is too large to decode safely (x)", 413),
        ("<b>: not a readable image", 415),
        ("<b>: floating-point images are not supported", 415),
        ("<b>: could not convert mode 'X' to RGB", 415),
        ("<b>: corrupt or truncated image (x)", 400),
        ("<b>: empty buffer", 400),
    ],
)
def test_image_error_codes(message, status):
    error = image_error(InvalidImageError(message), "a.png")
    assert error.status == status and error.detail.startswith("a.png: ")
    assert error.name == "a.png"


def test_the_colour_table_is_filled_once_after_enough_images(predictor, monkeypatch):
    """The server fills the quality gate's colour table (in a thread) once, after
    COLOUR_TABLE_AFTER decoded images; the verdicts do not change (tests/test_quality_fast)."""
    import io

    from PIL import Image

    from breastpath.serve import service as service_module
    from breastpath.serve.limits import ServeLimits
    from breastpath.serve.uploads import Upload

    calls: list[int] = []
    monkeypatch.setattr(service_module, "COLOUR_TABLE_AFTER", 3)
    monkeypatch.setattr(service_module, "fill_class_table", lambda: calls.append(1))
    service = service_module.PredictionService(predictor, ServeLimits())
    buffer = io.BytesIO()
    Image.new("RGB", (50, 50), (200, 120, 170)).save(buffer, "PNG")
    upload = Upload("patch.png", buffer.getvalue())
    for expected in (0, 0, 0, 1, 1, 1):
        service.decode(upload)
        assert len(calls) == expected
