"""Larger images reach a model the way its training images did: the cache records how its
larger images were fitted (``larger_image_fit``), ``evaluate`` prepares an image folder with the
model's own fit, and a cache fitted the other way is refused in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from breastpath.checkpoint import load_checkpoint
from breastpath.cli.main import main
from breastpath.config import DataConfig, TrainConfig
from breastpath.data.cache import open_prepared
from breastpath.data.prepare import prepare
from breastpath.data.transforms import fit_to_size
from breastpath.errors import CheckpointError
from breastpath.evaluate.pipeline import evaluate_checkpoint
from breastpath.imaging import decode_image
from breastpath.inference.predictor import Predictor
from breastpath.train.loop import train
from conftest import make_breakhis_tiles, save_png, synthetic_patch

TINY_NET = {"widths": [8, 16, 16], "hidden": 32}
FIELD_SHAPE = (46, 70)  # a 460x700 BreakHis field, at a tenth


def _field(rng: np.random.Generator, label: int) -> np.ndarray:
    """A field-shaped image whose left fifth is dark: a centre crop loses it, a stretch keeps it."""
    field = synthetic_patch(rng, label, size=FIELD_SHAPE)
    field[:, :14] //= 4
    return field


@pytest.fixture(scope="module")
def fields(tmp_path_factory) -> Path:
    """Full-size fields named as in the BreakHis release: 2 benign and 2 malignant patients."""
    root = tmp_path_factory.mktemp("fields")
    rng = np.random.default_rng(3)
    for patient, (kind, subtype, label) in enumerate(
        [("B", "F", 0), ("B", "TA", 0), ("M", "DC", 1), ("M", "LC", 1)]
    ):
        for seq in range(3):
            name = f"SOB_{kind}_{subtype}-14-{2000 + patient}-200-{seq + 1:03d}.png"
            save_png(root / subtype / name, _field(rng, label))
    return root


@pytest.fixture(scope="module")
def tile_run(tmp_path_factory) -> Path:
    """A tiny benign/malignant model trained on BreakHis-style tiles (``input_fit`` stretch)."""
    root = tmp_path_factory.mktemp("tile-model")
    subtypes = [("benign", "fibroadenoma", 0), ("malignant", "ductal_carcinoma", 1)]
    make_breakhis_tiles(root / "tiles", subtypes, slides=4, tiles=3, size=(48, 48))
    config = DataConfig(image_size=32, test_frac=0.25, val_frac=0.34)
    prepare([root / "tiles"], root / "prep", config=config)
    train_config = {"epochs": 1, "batch_size": 8, "progress": False, "model_args": TINY_NET}
    train(root / "prep", root / "run", TrainConfig.from_dict(train_config))
    return root / "run"


def test_prepare_records_how_larger_fields_were_fitted(fields, tmp_path):
    cropped = prepare([fields], tmp_path / "crop", config=DataConfig(image_size=32))
    stretched = prepare(
        [fields], tmp_path / "stretch", config=DataConfig(image_size=32, input_fit="stretch")
    )
    assert cropped["resized"] == 12 and stretched["stretched"] == 12
    assert any("aspect not kept" in note for note in stretched["notes"])
    data = open_prepared(tmp_path / "stretch")
    assert open_prepared(tmp_path / "crop").meta["larger_image_fit"] == "crop"
    assert data.meta["larger_image_fit"] == "stretch"
    first = decode_image(data.rows[0]["path"])
    expected, _ = fit_to_size(first, (32, 32), fit="stretch")
    np.testing.assert_array_equal(data.images[0], expected)
    assert data.images[0][:, :5].mean() < 0.5 * data.images[0][:, 10:].mean()  # the dark edge


def test_a_cache_prepared_before_the_record_tells_its_fit_from_its_index(fields, tmp_path):
    prepare([fields], tmp_path / "p", config=DataConfig(image_size=32, input_fit="stretch"))
    meta_file = tmp_path / "p" / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["larger_image_fit"]
    meta_file.write_text(json.dumps(meta))
    assert open_prepared(tmp_path / "p").meta["larger_image_fit"] == "stretch"


def test_square_tiles_resized_need_no_fit(tmp_path):
    make_breakhis_tiles(tmp_path / "t", [("benign", "adenosis", 0)], slides=1, tiles=2)
    config = DataConfig(image_size=32, test_frac=0.0, val_frac=0.0)
    summary = prepare([tmp_path / "t"], tmp_path / "p", config=config)
    assert summary["resized"] == 2  # 50x50 to 32x32: crop and stretch give the same pixels
    assert open_prepared(tmp_path / "p").meta["larger_image_fit"] is None


def test_evaluate_prepares_a_field_folder_with_the_models_own_fit(tile_run, fields, tmp_path):
    assert load_checkpoint(tile_run).meta.input_fit == "stretch"
    evaluate_checkpoint(tile_run, fields, tmp_path, allow_non_tissue=True)
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    predictor = Predictor.from_checkpoint(tile_run, device="cpu")
    images = [decode_image(row["path"]) for row in rows]
    expected = [p.probability for p in predictor.predict_images(images, allow_non_tissue=True)]
    scores = [float(row["probability"]) for row in rows]
    assert scores == pytest.approx(expected, abs=1e-6)


def test_a_cache_cropped_for_a_stretch_model_is_refused_in_one_line(
    tile_run, fields, tmp_path, capsys
):
    prepare([fields], tmp_path / "crop", config=DataConfig(image_size=32))
    with pytest.raises(CheckpointError, match="--input-fit stretch"):
        evaluate_checkpoint(tile_run, tmp_path / "crop", tmp_path / "out", split="all")
    code = main(
        ["evaluate", "--checkpoint", str(tile_run), "--data", str(tmp_path / "crop"),
         "--out", str(tmp_path / "cli"), "--split", "all"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.count("\n") == 0 and "centre-cropped" in err
    prepare([fields], tmp_path / "ok", config=DataConfig(image_size=32, input_fit="stretch"))
    result = evaluate_checkpoint(
        tile_run, tmp_path / "ok", tmp_path / "out-ok", split="all", allow_non_tissue=True
    )
    assert result["patch"]["n"] == 12


def test_a_model_trained_on_stretched_fields_serves_them_stretched(fields, tmp_path):
    prepare(
        [fields],
        tmp_path / "p",
        config=DataConfig(image_size=32, input_fit="stretch", test_frac=0.25, val_frac=0.34),
    )
    train_config = {"epochs": 1, "batch_size": 8, "progress": False, "model_args": TINY_NET}
    train(tmp_path / "p", tmp_path / "run", TrainConfig.from_dict(train_config))
    meta = load_checkpoint(tmp_path / "run").meta
    assert meta.data["dataset"] == "breakhis" and meta.input_fit == "stretch"
