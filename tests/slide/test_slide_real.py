"""Real scanner files from ``../shared/data/wsi`` (see its MANIFEST.md): Aperio SVS, the same
scan as DICOM-WSI, and a Hamamatsu NDPI fluorescence scan. Skipped when the files or a reader
are missing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from breastpath.errors import SlideError
from breastpath.slide.reader import open_slide
from conftest import SHARED_DATA

pytestmark = pytest.mark.data

WSI = SHARED_DATA / "wsi"
SVS = WSI / "CMU-1-Small-Region.svs"
DICOM = WSI / "CMU-1-Small-Region-dicom"
NDPI = WSI / "test3-DAPI-2-387.ndpi"


def _need(path: Path, *modules: str) -> Path:
    if not path.exists():
        pytest.skip(f"{path.name} not found in {WSI} (set BREASTPATH_SHARED_DATA)")
    for module in modules:
        pytest.importorskip(module, reason=f"{module} cannot be imported")
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    from breastpath.cli.main import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_svs_reads_alike_with_openslide_and_tifffile():
    _need(SVS, "openslide", "imagecodecs")
    with open_slide(SVS) as auto, open_slide(SVS, backend="tifffile") as tiff:
        assert auto.backend == "openslide"  # the reader made for Aperio
        assert auto.dimensions == tiff.dimensions == (2220, 2967)
        assert auto.mpp == tiff.mpp == pytest.approx(0.499)
        assert auto.mpp_source == "openslide.mpp-x"
        assert tiff.mpp_source == "aperio description MPP"
        a = auto.read_region((700, 900), 0, (400, 300))
        b = tiff.read_region((700, 900), 0, (400, 300))
    assert a.std() > 10  # tissue, not background
    np.testing.assert_array_equal(a, b)


def test_dicom_folder_file_and_list_match_the_svs():
    _need(SVS, "openslide")
    _need(DICOM, "wsidicom")
    files = sorted(DICOM.glob("*.dcm"))
    with open_slide(SVS) as svs:
        expected = svs.read_region((1000, 1200), 0, (480, 480))
    for source in (DICOM, files[-1], files):
        with open_slide(source) as slide:
            assert slide.backend == "wsidicom"
            assert slide.dimensions == (2220, 2967)
            assert slide.mpp == pytest.approx(0.499) and slide.mpp_source == "DICOM PixelSpacing"
            np.testing.assert_array_equal(slide.read_region((1000, 1200), 0, (480, 480)), expected)
            edge = slide.read_region((2100, 2900), 0, (200, 100))  # past the edge: white
            assert (edge[67:] == 255).all() and (edge[:, 120:] == 255).all()


def test_ndpi_opens_with_openslide_and_tifffile_cannot_decode_it():
    _need(NDPI, "openslide")
    with open_slide(NDPI) as slide:
        assert slide.backend == "openslide"
        assert slide.dimensions == (3968, 4864) and len(slide.levels) >= 4
        assert slide.mpp == pytest.approx(0.2282, abs=1e-4)
        region = slide.read_region((2000, 2400), 0, (256, 256))
    assert region.shape == (256, 256, 3)
    with pytest.raises(SlideError, match="tifffile cannot decode"):
        open_slide(NDPI, backend="tifffile")


@pytest.mark.parametrize("source", [SVS, DICOM], ids=["svs", "dicom"])
def test_cli_scores_the_svs_and_the_dicom_folder(source, tmp_path, capsys):
    _need(source, "openslide", "wsidicom")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "slide", source, "--out", out, "--level", "0", "--no-progress")
    assert code == 0, err
    summary = json.loads((out / "slide.json").read_text())
    assert summary["slide"]["backend"] == ("wsidicom" if source == DICOM else "openslide")
    assert summary["stats"]["tiles"] == summary["tiling"]["tiles_scored"] > 500
    assert summary["verdict"]["tiles_assessed"] == summary["stats"]["tiles"]
    with open(out / "tiles.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    scored = [r for r in rows if not r["skipped"]]
    assert len(scored) == summary["stats"]["tiles"]
    assert {r["skipped"] for r in rows} <= {"", "mask", "background", "not_he", "no_texture"}
    top = sorted(scored, key=lambda r: float(r["probability"]))[-20:]
    mean = np.mean([float(r["probability"]) for r in top])
    assert summary["stats"]["top_k_mean"] == pytest.approx(mean, abs=1e-5)
    # none of the tiles behind the headline is glass (glass: bright and flat, std ~2.6)
    with open_slide(source) as slide:
        for row in top:
            tile = slide.read_region((int(row["x"]), int(row["y"])), 0, (50, 50))
            assert tile.mean() < 225 or tile.std() > 10, (row, tile.mean(), tile.std())


def test_cli_svs_and_dicom_give_the_same_score(tmp_path, capsys):
    _need(SVS, "openslide")
    _need(DICOM, "wsidicom")
    scores = []
    files = sorted(DICOM.glob("*.dcm"))  # the series' files, given one by one
    for i, source in enumerate([[SVS], [DICOM], files]):
        out = tmp_path / str(i)
        code, _, err = _run(capsys, "slide", *source, "--out", out, "--no-progress")
        assert code == 0, err
        summary = json.loads((out / "slide.json").read_text())
        assert summary["tiling"]["mpp"] == pytest.approx(4.0, rel=0.02)  # the IDC scale
        scores.append((summary["stats"], summary["verdict"]))
    assert scores[0] == scores[1] == scores[2]  # identical pixels, identical tiles


def test_cli_flags_the_fluorescence_ndpi_as_not_he(tmp_path, capsys):
    _need(NDPI, "openslide")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "slide", NDPI, "--out", out, "--no-progress")
    assert code == 2 and "not scored" in err and "not_he" in err
    assert "not brightfield H&E" in stdout and "failed the H&E quality gate" in stdout
    summary = json.loads((out / "slide.json").read_text())
    assert summary["stats"] is None and summary["verdict"]["label"] == "not assessed"
    assert summary["quality"]["dark_background"] is True
    assert summary["slide"]["backend"] == "openslide"
    with open(out / "tiles.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["skipped"] != "mask"]
    reasons = [r["skipped"] for r in rows]  # every tile flagged, most by the H&E gate
    assert rows and set(reasons) <= {"not_he", "dark", "background", "no_texture"}
    assert reasons.count("not_he") + reasons.count("dark") > len(rows) / 2
