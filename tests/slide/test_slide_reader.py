"""Slide readers: lazy region reads from generated pyramidal TIFFs match the stored pixels; the
backends agree; ``auto`` picks the reader made for the format and falls back on decode errors."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from breastpath.errors import BreastpathError, SlideError
from breastpath.slide.adapters import openslide_mpp
from breastpath.slide.reader import backend_order, open_slide, plausible_mpp, to_rgb
from breastpath.slide.synthetic import Blob, write_synthetic_slide
from breastpath.slide.tiff_reader import TiffReader

tifffile = pytest.importorskip("tifffile")

BLOBS = [Blob(500, 500, 300, 250, "normal"), Blob(1500, 1000, 250, 300, "tumor")]


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("slides")
    common = {"size": (2100, 1500), "tile": 256, "downsamples": (1, 4), "blobs": BLOBS}
    return {
        "ome": write_synthetic_slide(root / "s.ome.tif", pyramid="subifds", **common),
        "pages": write_synthetic_slide(root / "p.tif", pyramid="pages", mpp=0.5, **common),
    }


def _level(path: Path, level: int) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].levels[level].asarray()


@pytest.mark.parametrize("kind", ["ome", "pages"])
def test_levels_and_mpp(slides, kind):
    with open_slide(slides[kind]) as slide:
        assert isinstance(slide, TiffReader)
        assert slide.dimensions == (2100, 1500)
        assert [(lv.width, lv.height) for lv in slide.levels] == [(2100, 1500), (525, 375)]
        assert slide.levels[1].downsample == pytest.approx(4.0)
        assert slide.mpp == pytest.approx(0.25 if kind == "ome" else 0.5)
        assert slide.level_mpp(1) == pytest.approx(4 * slide.mpp)
        assert slide.best_level_for_downsample(3.9) == 0
        assert slide.best_level_for_downsample(16) == 1


@pytest.mark.parametrize("kind", ["ome", "pages"])
def test_read_region_matches_stored_pixels(slides, kind):
    full = [_level(slides[kind], 0), _level(slides[kind], 1)]
    rng = np.random.default_rng(0)
    with open_slide(slides[kind]) as slide:
        for _ in range(12):
            level = int(rng.integers(0, 2))
            ds = 4 if level else 1
            h, w = full[level].shape[:2]
            x, y = int(rng.integers(0, w - 1)), int(rng.integers(0, h - 1))
            size = (int(rng.integers(1, 400)), int(rng.integers(1, 400)))
            region = slide.read_region((x * ds, y * ds), level, size)
            assert region.shape == (size[1], size[0], 3) and region.dtype == np.uint8
            inside = full[level][y : y + size[1], x : x + size[0]]
            np.testing.assert_array_equal(region[: inside.shape[0], : inside.shape[1]], inside)
            # past the right/bottom edge is white background
            assert (region[inside.shape[0] :] == 255).all()
            assert (region[:, inside.shape[1] :] == 255).all()
        # fully outside, and partly left of / above the image
        assert (slide.read_region((-500, -500), 0, (100, 100)) == 255).all()
        part = slide.read_region((-10, 0), 0, (30, 20))
        assert (part[:, :10] == 255).all()
        np.testing.assert_array_equal(part[:, 10:], full[0][:20, :20])


def test_thumbnail_uses_a_reduced_level(slides):
    with open_slide(slides["ome"]) as slide:
        thumb, (sx, sy) = slide.thumbnail(max_size=600)
        np.testing.assert_array_equal(thumb, _level(slides["ome"], 1))
        assert (sx, sy) == pytest.approx((4.0, 4.0))
        small, (sx, _) = slide.thumbnail(max_size=200)  # level 1 area-averaged by 3
        assert max(small.shape[:2]) <= 200 and sx == pytest.approx(2100 / small.shape[1])


def test_stripped_tiff_without_pyramid_is_streamed(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, image, photometric="rgb", rowsperstrip=64)
    with open_slide(path) as slide:
        assert len(slide.levels) == 1 and slide.mpp is None
        np.testing.assert_array_equal(
            slide.read_region((123, 77), 0, (300, 200)), image[77:277, 123:423]
        )
        thumb, _ = slide.thumbnail(max_size=300)  # 3x area average, read block by block
        expected = np.full((702, 900, 3), 255.0)
        expected[:700] = image
        expected = expected.reshape(234, 3, 300, 3, 3).mean(axis=(1, 3))
        np.testing.assert_array_equal(thumb, np.round(expected).astype(np.uint8))


def test_empty_tiles_are_white_and_gray_becomes_rgb(tmp_path):
    tile = np.zeros((16, 16), dtype=np.uint8)
    tiles = iter([zlib.compress(tile.tobytes()), b"", b"", zlib.compress(tile.tobytes())])
    path = tmp_path / "sparse.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(tiles, shape=(32, 32), dtype=np.uint8, tile=(16, 16), compression="zlib")
    with open_slide(path) as slide:
        region = slide.read_region((0, 0), 0, (32, 32))
    assert region.shape == (32, 32, 3)
    assert (region[:16, :16] == 0).all() and (region[16:, 16:] == 0).all()
    assert (region[:16, 16:] == 255).all() and (region[16:, :16] == 255).all()


def test_to_rgb_composites_alpha_on_white():
    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [200, 100, 0, 128]]], dtype=np.uint8)
    rgb = to_rgb(rgba)
    assert rgb[0, 0].tolist() == [255, 255, 255]
    assert rgb[0, 1].tolist() == [0, 0, 0]
    assert rgb[0, 2].tolist() == [227, 177, 127]


def test_bad_inputs_raise_named_errors(tmp_path, slides):
    with pytest.raises(SlideError, match="no such file"):
        open_slide(tmp_path / "missing.svs")
    with pytest.raises(SlideError, match=r"not a slide.*wsidicom cannot open"):
        open_slide(tmp_path)  # a folder is read as DICOM-WSI
    with pytest.raises(SlideError, match="only a DICOM folder"):
        open_slide(tmp_path, backend="tifffile")
    text = tmp_path / "notes.tif"
    text.write_text("not a slide")
    with pytest.raises(SlideError, match="not a slide"):
        open_slide(text)
    with pytest.raises(SlideError, match="unknown slide backend"):
        open_slide(slides["ome"], backend="bioformats")
    with open_slide(slides["ome"]) as slide, pytest.raises(SlideError, match="no level 5"):
        slide.read_region((0, 0), 5, (10, 10))
    assert issubclass(SlideError, BreastpathError) and issubclass(SlideError, ValueError)


def test_openslide_agrees_with_tifffile(slides):
    pytest.importorskip("openslide", reason="openslide-python is not installed")
    with (
        open_slide(slides["pages"], backend="openslide") as other,
        open_slide(slides["pages"], backend="tifffile") as base,
    ):
        assert other.backend == "openslide" and base.backend == "tifffile"
        assert [(lv.width, lv.height) for lv in other.levels] == [
            (lv.width, lv.height) for lv in base.levels
        ]
        assert other.mpp == pytest.approx(base.mpp) == pytest.approx(0.5)
        assert other.mpp_source == "openslide.mpp-x" and base.mpp_source == "TIFF XResolution"
        for level, location in [(0, (1200, 700)), (1, (400, 400)), (0, (2000, 1400))]:
            np.testing.assert_array_equal(
                other.read_region(location, level, (128, 96)),
                base.read_region(location, level, (128, 96)),
            )


def test_auto_order_and_fallback_on_decode_failure(slides, tmp_path, monkeypatch):
    assert backend_order(Path("x.svs")) == ["openslide", "tifffile"]
    assert backend_order(Path("x.dcm")) == ["wsidicom"] and backend_order(tmp_path) == ["wsidicom"]
    assert backend_order(slides["ome"]) == ["tifffile", "openslide"]
    pytest.importorskip("openslide", reason="openslide-python is not installed")

    def broken(self, location, level, size):
        raise SlideError("cannot decode tile 0 (Not a JPEG file)")

    monkeypatch.setattr(TiffReader, "read_region", broken)
    with open_slide(slides["pages"]) as slide:  # tifffile parses it, cannot decode: openslide
        assert slide.backend == "openslide"
    with pytest.raises(SlideError, match="Not a JPEG file"):
        open_slide(slides["pages"], backend="tifffile")


def test_mpp_sources_and_plausibility(tmp_path):
    assert openslide_mpp({"openslide.mpp-x": "0.2527"}) == (0.2527, "openslide.mpp-x")
    assert openslide_mpp({"tiff.XResolution": "72", "tiff.ResolutionUnit": "inch"}) == (
        None,
        None,
    )  # a 72-dpi default is 353 um/px: treated as missing
    assert plausible_mpp("abc") is None and plausible_mpp(0.0) is None
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), resolution=(72, 72))
    with open_slide(path) as slide:
        assert slide.mpp is None and slide.mpp_source is None
        slide.set_mpp(0.5, source="--slide-mpp")
        assert slide.describe()["mpp"] == 0.5 and slide.describe()["mpp_source"] == "--slide-mpp"


def test_jpeg_tiles_decode_like_tifffile(tmp_path):
    pytest.importorskip("imagecodecs")
    rng = np.random.default_rng(2)
    image = np.clip(rng.normal(180, 30, (600, 700, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "jpeg.tif"
    tifffile.imwrite(path, image, photometric="rgb", tile=(256, 256), compression="jpeg")
    stored = tifffile.imread(path)
    with open_slide(path) as slide:
        np.testing.assert_array_equal(
            slide.read_region((100, 50), 0, (500, 500)), stored[50:550, 100:600]
        )
