"""Deep Zoom tiles over the project's readers (:mod:`breastpath.slide.deepzoom`) against
OpenSlide's own ``DeepZoomGenerator``: the same layout (levels, tile counts, sizes, the region
each tile reads) and the same pixels, on a generated three-level TIFF pyramid and on the real
SVS and its DICOM copy; and the ranked regions of called tiles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from breastpath.slide.deepzoom import DeepZoom, best_level, open_deepzoom
from breastpath.slide.reader import open_slide
from breastpath.slide.regions import called_regions
from breastpath.slide.synthetic import Blob, write_synthetic_slide

pytest.importorskip("openslide")
from openslide import OpenSlide
from openslide.deepzoom import DeepZoomGenerator

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BREASTPATH_SHARED_DATA", REPO.parent / "shared" / "data"))
SVS = SHARED / "wsi" / "CMU-1-Small-Region.svs"
DICOM = SHARED / "wsi" / "CMU-1-Small-Region-dicom"


def _addresses(dz) -> list[tuple[int, tuple[int, int]]]:
    """Corners, middle and edges of every level."""
    out = []
    for level, (cols, rows) in enumerate(dz.level_tiles):
        for address in {(0, 0), (cols - 1, rows - 1), (cols // 2, rows // 2), (cols - 1, 0)}:
            out.append((level, address))
    return out


def _assert_same(ours, reference, *, tolerance: int = 0) -> None:
    assert ours.level_count == reference.level_count
    assert ours.level_tiles == reference.level_tiles
    assert ours.level_dimensions == reference.level_dimensions
    for level, address in _addresses(reference):
        if isinstance(ours, DeepZoom):
            assert ours.tile_region(level, address) == reference._get_tile_info(level, address)
        a = np.asarray(ours.get_tile(level, address), dtype=np.int16)
        b = np.asarray(reference.get_tile(level, address).convert("RGB"), dtype=np.int16)
        assert a.shape == b.shape, (level, address)
        assert np.abs(a - b).max() <= tolerance, (level, address)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> Path:
    """Three levels (1, 4, 16) in pages, so OpenSlide reads it as a generic tiled TIFF."""
    path = tmp_path_factory.mktemp("dz") / "pyramid.tif"
    blobs = [Blob(1200, 1000, 700, 600, "normal"), Blob(3000, 2000, 700, 650, "tumor")]
    return write_synthetic_slide(
        path, size=(4200, 3000), tile=256, downsamples=(1, 4, 16), blobs=blobs, pyramid="pages"
    )


def test_layout_and_pixels_match_openslide_on_a_generated_pyramid(pyramid):
    reference = DeepZoomGenerator(OpenSlide(str(pyramid)))
    with open_slide(pyramid, backend="tifffile") as reader:
        assert len(reader.levels) == 3
        ours = DeepZoom(reader)
        # deep zoom levels read from pyramid levels 2, 1 and 0 in turn
        assert {ours.tile_region(z, (0, 0))[0][1] for z in range(ours.level_count)} == {0, 1, 2}
        _assert_same(ours, reference)


def test_openslide_slides_use_openslides_generator(pyramid):
    with open_slide(pyramid, backend="openslide") as reader:
        assert isinstance(open_deepzoom(reader), DeepZoomGenerator)
    with open_slide(pyramid, backend="tifffile") as reader:
        assert isinstance(open_deepzoom(reader), DeepZoom)


def test_out_of_range_tiles_are_refused(pyramid):
    with open_slide(pyramid, backend="tifffile") as reader:
        dz = DeepZoom(reader)
        cols, rows = dz.level_tiles[-1]
        for level, address in [(dz.level_count, (0, 0)), (-1, (0, 0)), (3, (1, 0))]:
            with pytest.raises(ValueError):
                dz.get_tile(level, address)
        with pytest.raises(ValueError):
            dz.get_tile(dz.level_count - 1, (cols, 0))
        with pytest.raises(ValueError):
            dz.get_tile(dz.level_count - 1, (0, rows))


def test_best_level_is_openslides_rule():
    downsamples = (1.0, 4.000372, 16.00149)
    assert [best_level(downsamples, d) for d in (1, 2, 4, 8, 16, 32)] == [0, 0, 0, 1, 1, 2]


@pytest.mark.data
def test_real_svs_and_its_dicom_copy_match_openslide():
    if not SVS.is_file() or not DICOM.is_dir():
        pytest.skip(f"real slides not found under {SHARED / 'wsi'}")
    reference = DeepZoomGenerator(OpenSlide(str(SVS)))
    with open_slide(SVS, backend="tifffile") as reader:
        _assert_same(DeepZoom(reader), reference)
    with open_slide(DICOM) as reader:  # wsidicom: the same JPEG tiles, decoded the same
        assert reader.backend == "wsidicom"
        _assert_same(DeepZoom(reader), reference, tolerance=0)


def test_regions_are_connected_called_tiles_ranked_by_size():
    def tile(row, col, p):
        return {"row": row, "col": col, "x": col * 10, "y": row * 10, "size": 10, "probability": p}

    tiles = [
        tile(0, 0, 0.9),
        tile(1, 1, 0.6),  # touches (0, 0) by a corner
        tile(0, 5, 0.99),  # alone
        tile(3, 3, 0.2),  # not called
        tile(3, 4, None),  # skipped
        tile(5, 0, 0.7),
        tile(5, 1, 0.8),
        tile(6, 1, 0.75),
    ]
    regions = called_regions(tiles, threshold=0.5)
    assert [(r["rank"], r["tiles"]) for r in regions] == [(1, 3), (2, 2), (3, 1)]
    assert regions[0]["bbox"] == [0, 50, 20, 70] and regions[0]["max"] == 0.8
    assert regions[1]["bbox"] == [0, 0, 20, 20]
    assert regions[2]["center"] == [55.0, 5.0]
    assert called_regions(tiles, threshold=0.5, limit=1)[0]["tiles"] == 3
    assert called_regions(tiles, threshold=0.999) == []
