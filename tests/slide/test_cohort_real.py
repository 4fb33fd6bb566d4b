"""A cohort over the real slides of ``../shared/data/wsi`` (an Aperio SVS, the same scan as a
DICOM-WSI folder, a fluorescence NDPI) beside a DICOM folder holding two series: the SVS and
DICOM rows agree, the fluorescence scan is skipped with its reason, the two-series folder is an
error row. Skipped when the files are absent."""

from __future__ import annotations

import csv
import shutil

import pytest

from breastpath.cli.main import main
from conftest import SHARED_DATA

pytestmark = pytest.mark.data
WSI = SHARED_DATA / "wsi"


def test_real_slides_and_a_two_series_dicom_folder(tmp_path, capsys):
    if not (WSI / "CMU-1-Small-Region.svs").exists():
        pytest.skip(f"real slides not found in {WSI} (set BREASTPATH_SHARED_DATA)")
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("openslide")
    two = tmp_path / "cohort" / "two-series"
    two.mkdir(parents=True)
    series = pydicom.uid.generate_uid()
    for i, path in enumerate(sorted((WSI / "CMU-1-Small-Region-dicom").glob("*.dcm"))):
        shutil.copy(path, two / f"a{i}.dcm")
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(two / f"b{i}.dcm")
    (tmp_path / "cohort" / "wsi").symlink_to(WSI)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["slide", str(tmp_path / "cohort"), "--out", str(out), "--no-progress"]) == 0
    with open(out / "cohort.csv", newline="") as handle:
        rows = {r["slide"]: r for r in csv.DictReader(handle)}
    svs, dicom = rows["CMU-1-Small-Region"], rows["CMU-1-Small-Region-dicom"]
    assert svs["status"] == dicom["status"] == "scored"
    assert (svs["backend"], dicom["backend"]) == ("openslide", "wsidicom")
    for key in ("verdict", "positive", "extent", "tiles_scored", "tiles_called"):
        assert svs[key] == dicom[key], key
    assert rows["test3-DAPI-2-387"]["status"].startswith("skipped: no tissue tile passed")
    assert "a DICOM folder with 2 series" in rows["two-series"]["status"]
