"""The packed cache: decoded once, padded edge patches, skipped bad files, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from breastpath.config import DataConfig
from breastpath.data.cache import open_prepared
from breastpath.data.loader import BatchLoader
from breastpath.data.prepare import prepare
from breastpath.data.transforms import fit_to_size
from breastpath.errors import CacheError, ConfigError
from breastpath.imaging import decode_image
from conftest import make_idc_tree


def test_cache_holds_decoded_pixels_and_patients_do_not_cross_splits(prepared_idc, idc_tree):
    data = open_prepared(prepared_idc)
    assert data.images.shape[1:] == (50, 50, 3)
    for row in (0, len(data.rows) // 2, len(data.rows) - 1):
        expected, _ = fit_to_size(decode_image(data.rows[row]["path"]), (50, 50))
        np.testing.assert_array_equal(data.images[row], expected)
    splits_per_patient = {}
    for patient, split in zip(data.patients, data.splits, strict=True):
        splits_per_patient.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in splits_per_patient.values())
    assert set(data.splits) == {"train", "val", "test"}


def test_edge_patches_are_padded_white_at_the_bottom(prepared_idc):
    data = open_prepared(prepared_idc)
    short = [i for i, r in enumerate(data.rows) if r["height"] == "37"]
    assert short and all(data.rows[i]["fit"] == "padded" for i in short)
    assert (np.asarray(data.images[short[0]])[37:] == 255).all()
    summary = json.loads((prepared_idc / "summary.json").read_text())
    assert summary["padded"] == len(short)
    assert any("padded" in note for note in summary["notes"])


def test_unreadable_files_are_skipped_and_listed(tmp_path):
    tree = make_idc_tree(tmp_path / "idc", patients=4, per_class=3)
    bad = tree / "10000" / "0" / "10000_idx5_x999_y999_class0.png"
    bad.write_bytes(b"not a png at all")
    truncated = tree / "10001" / "1" / "10001_idx5_x998_y998_class1.png"
    good = next((tree / "10001" / "1").glob("*.png")).read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    total = len(list(tree.rglob("*.png")))
    summary = prepare([tree], tmp_path / "out", config=DataConfig(test_frac=0.25, val_frac=0.34))
    assert summary["images"] == total - 2
    assert sorted(s["path"] for s in summary["skipped"]) == sorted([str(bad), str(truncated)])
    data = open_prepared(tmp_path / "out")
    assert len(data.labels) == total - 2


def test_split_is_reproducible_and_seed_dependent(idc_tree, tmp_path):
    first = prepare([idc_tree], tmp_path / "a", config=DataConfig(seed=5))
    second = prepare([idc_tree], tmp_path / "b", config=DataConfig(seed=5))
    assert (tmp_path / "a" / "splits.csv").read_text() == (
        tmp_path / "b" / "splits.csv"
    ).read_text()
    assert first["splits"] == second["splits"]


def test_incomplete_or_damaged_cache_is_refused(prepared_idc, tmp_path):
    with pytest.raises(CacheError, match="no such prepared folder"):
        open_prepared(tmp_path / "missing")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared_idc, copy)
    with open(copy / "images.u8", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(CacheError, match="wrong size"):
        open_prepared(copy)
    (copy / "meta.json").unlink()
    with pytest.raises(CacheError, match=r"meta\.json missing"):
        open_prepared(copy)


def test_batch_loader_covers_split_once_and_shuffles_by_epoch(prepared_idc):
    data = open_prepared(prepared_idc)
    rows = data.indices("train")
    loader = BatchLoader(data.images, data.labels, rows, batch_size=7, shuffle=True, seed=1)
    seen = np.concatenate([batch_rows for _, _, batch_rows in loader])
    assert sorted(seen) == sorted(rows)
    images, labels, batch_rows = next(iter(loader))
    np.testing.assert_array_equal(images.numpy(), data.images[batch_rows])
    np.testing.assert_array_equal(labels.numpy(), data.labels[batch_rows])
    loader.set_epoch(1)
    assert not np.array_equal(seen, np.concatenate([b for _, _, b in loader]))
    # two ranks see disjoint halves
    halves = [
        np.concatenate(
            [
                b
                for _, _, b in BatchLoader(
                    data.images, data.labels, rows, batch_size=5, shuffle=True, rank=r, world_size=2
                )
            ]
        )
        for r in (0, 1)
    ]
    assert not set(halves[0]) & set(halves[1])


def test_fit_to_size_resizes_large_images_keeping_aspect():
    image = np.zeros((460, 700, 3), np.uint8)
    image[:, 350:] = 200
    out, action = fit_to_size(image, (224, 224))
    assert action == "resized" and out.shape == (224, 224, 3)
    assert out[:, :100].max() == 0 and out[:, -100:].min() == 200


def test_fit_to_size_can_stretch_the_whole_field():
    image = np.zeros((460, 700, 3), np.uint8)
    image[:, :70] = 200  # the left tenth: outside a centre crop
    cropped, _ = fit_to_size(image, (224, 224))
    stretched, action = fit_to_size(image, (224, 224), fit="stretch")
    assert cropped.max() == 0
    assert action == "stretched" and stretched.shape == (224, 224, 3)
    assert stretched[:, :22].min() == 200 and stretched[:, 23:].max() == 0  # 70 / 700 * 224
    small = np.zeros((40, 50, 3), np.uint8)  # smaller than the input: padded either way
    assert fit_to_size(small, (50, 50), fit="stretch")[1] == "padded"
    with pytest.raises(ConfigError, match="input fit"):
        fit_to_size(image, (224, 224), fit="squash")


@pytest.mark.data
def test_real_idc_prepare(shared_data, tmp_path):
    summary = prepare([shared_data / "idc"], tmp_path / "idc")
    assert summary["images"] == 7488 and summary["patients"] == 185
    assert summary["padded"] == 62 and not summary["skipped"]
    parts = summary["splits"]
    assert parts["train"]["patients"] + parts["val"]["patients"] + parts["test"]["patients"] == 185
