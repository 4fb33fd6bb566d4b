"""Scanning sources: IDC folders and zip, BreakHis names and trees, ImageFolder trees."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from breastpath.data.index import SUBTYPE_NAMES, scan_source, scan_sources
from breastpath.errors import DatasetLayoutError
from conftest import make_idc_tree, save_png, synthetic_patch


def test_idc_folder_keeps_patient_label_and_coordinates(idc_tree):
    index = scan_source(idc_tree)
    assert index.dataset == "idc"
    assert index.class_names == ("non-IDC", "IDC")
    record = next(r for r in index.records if r.path.endswith("10001_idx5_x51_y101_class1.png"))
    assert (record.patient, record.label, record.x, record.y) == ("10001", 1, 51, 101)
    assert {r.label for r in index.records} == {0, 1}


def test_idc_zip_counts_each_patch_once(tmp_path):
    tree = make_idc_tree(tmp_path / "tree", patients=3, per_class=2)
    archive = tmp_path / "IDC_regular_ps50_idx5.zip"
    files = sorted(p for p in tree.rglob("*.png"))
    with zipfile.ZipFile(archive, "w") as zf:
        for path in files:  # the Kaggle zip holds each patch under two roots
            rel = path.relative_to(tree).as_posix()
            zf.write(path, rel)
            zf.write(path, f"IDC_regular_ps50_idx5/{rel}")
    index = scan_source(archive)
    assert len(index) == len(files)
    assert all("::" in r.path for r in index.records)


def test_breakhis_names_give_patient_subtype_and_magnification(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "BreaKHis_v1/histology_slides/breast"
    names = [
        "benign/SOB/fibroadenoma/SOB_B_F_14-21998CD/40X/SOB_B_F-14-21998CD-40-001.png",
        "benign/SOB/adenosis/SOB_B_A_14-22549AB/200X/SOB_B_A-14-22549AB-200-001.png",
        "malignant/SOB/ductal_carcinoma/SOB_M_DC_14-2523/40X/SOB_M_DC-14-2523-40-010.png",
        "malignant/SOB/ductal_carcinoma/SOB_M_DC_14-2523/200X/SOB_M_DC-14-2523-200-003.png",
    ]
    for name in names:
        save_png(root / name, synthetic_patch(rng, 0, size=(46, 70)))
    index = scan_source(tmp_path)
    assert index.dataset == "breakhis"
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in index.records}
    dc = by_name["SOB_M_DC-14-2523-40-010.png"]
    assert (dc.patient, dc.label_name, dc.subtype, dc.magnification) == (
        "2523",
        "malignant",
        "ductal_carcinoma",
        "40",
    )
    assert by_name["SOB_B_A-14-22549AB-200-001.png"].patient == "22549"

    only_200 = scan_source(tmp_path, magnification="200")
    assert len(only_200) == 2
    subtypes = scan_source(tmp_path, task="subtype")
    assert subtypes.class_names == ("adenosis", "fibroadenoma", "ductal_carcinoma")


def test_breakhis_tile_tree_uses_numeric_patient_root(tmp_path):
    rng = np.random.default_rng(0)
    for cls, subtype, slide in [
        ("benign", "fibroadenoma", "22549AB"),
        ("benign", "fibroadenoma", "22549CD"),
        ("malignant", "ductal_carcinoma", "4372"),
    ]:
        save_png(
            tmp_path / cls / subtype / slide / f"{slide}-200X-tile01.png",
            synthetic_patch(rng, 0, size=(32, 32)),
        )
    index = scan_source(tmp_path)
    assert index.dataset == "breakhis-tiles"
    assert sorted({r.patient for r in index.records}) == ["22549", "4372"]
    assert {r.magnification for r in index.records} == {"200"}
    assert set(scan_source(tmp_path, task="subtype").class_names) <= set(SUBTYPE_NAMES)


def test_image_folder_with_and_without_patient_level(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("normal", "tumor"):
        for i in range(2):
            save_png(tmp_path / "flat" / cls / f"{i}.png", synthetic_patch(rng, 0, (8, 8)))
            save_png(tmp_path / "nested" / cls / f"p{i}" / "a.png", synthetic_patch(rng, 0, (8, 8)))
    flat = scan_source(tmp_path / "flat")
    assert flat.dataset == "folder"
    assert flat.class_names == ("normal", "tumor")  # the cancer class is last
    assert len({r.patient for r in flat.records}) == 4
    assert any("each image is its own group" in n for n in flat.notes)
    nested = scan_source(tmp_path / "nested")
    assert sorted({r.patient for r in nested.records}) == ["p0", "p1"]


@pytest.mark.parametrize("make", ["missing", "empty", "no_images", "unknown"])
def test_bad_sources_raise_named_errors(tmp_path, make):
    target = tmp_path / "src"
    if make == "empty":
        target.mkdir()
    elif make == "no_images":
        (target / "a").mkdir(parents=True)
        (target / "a" / "notes.txt").write_text("hello")
    elif make == "unknown":
        save_png(target / "a" / "b" / "c" / "d" / "e.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetLayoutError):
        scan_source(target)


def test_bad_options_raise(idc_tree):
    with pytest.raises(DatasetLayoutError, match="unknown task"):
        scan_source(idc_tree, task="nope")
    with pytest.raises(DatasetLayoutError, match="subtype task needs BreakHis"):
        scan_source(idc_tree, task="subtype")
    with pytest.raises(DatasetLayoutError):
        scan_sources([])


@pytest.mark.data
def test_real_idc_sample_is_indexed(shared_data):
    index = scan_source(shared_data / "idc")
    assert len(index) == 7488
    assert len({r.patient for r in index.records}) == 185
    assert index.class_counts() == {"non-IDC": 5356, "IDC": 2132}
