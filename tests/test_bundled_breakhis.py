"""The bundled ``breakhis`` model: installed, verified, self-describing, usable on real tiles."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from breastpath.checkpoint import (
    BUNDLED,
    BUNDLED_CARDS,
    bundled_name,
    load_checkpoint,
    resolve_checkpoint,
)
from conftest import SHARED_DATA

ASSETS = Path(str(resources.files("breastpath") / "assets"))
TILES = SHARED_DATA / "breakhis-tiles"


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint("breakhis")  # checks the weights' sha256


def test_bundled_files_ship_in_the_package(checkpoint):
    stem = BUNDLED["breakhis"]
    for name in (f"{stem}.json", f"{stem}.safetensors", BUNDLED_CARDS["breakhis"]):
        assert (ASSETS / name).is_file(), name
    assert resolve_checkpoint("breakhis") == ASSETS / f"{stem}.json"
    assert bundled_name(resolve_checkpoint("breakhis")) == "breakhis"
    assert (ASSETS / f"{stem}.safetensors").stat().st_size < 30e6
    text = (ASSETS / f"{stem}.json").read_text(encoding="utf-8")
    assert "/work/" not in text and "/tmp/" not in text  # no machine paths in the asset


def test_metadata_describes_the_model_and_its_crossvalidation(checkpoint):
    meta = checkpoint.meta.to_dict()
    assert meta["class_names"] == ["benign", "malignant"]
    assert meta["model"]["name"] == "efficientnet_lite0"
    assert meta["input_size"] == [224, 224]
    assert 0.0 < meta["threshold"] < 1.0
    assert meta["init"]["source"] != "scratch"
    cv = meta["crossval"]
    assert cv["folds"] >= 3
    for level in ("image", "patient"):
        block = cv["pooled"][level]
        for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
            low, high = block["ci95"][metric]
            assert 0.0 <= low <= block[metric] <= high <= 1.0
    assert cv["pooled"]["patient"]["n"] == 30
    assert 0.0 <= cv["colour_baseline"]["roc_auc"] <= 1.0  # the confound is measured and kept
    assert meta["float16_check"]["decision_changes"] <= 2


def test_each_bundled_model_shows_its_own_card(checkpoint):
    from breastpath.serve.modelcard import model_card_markdown

    breakhis = model_card_markdown(resolve_checkpoint("breakhis"), {"name": "x"})
    default = model_card_markdown(resolve_checkpoint("default"), {"name": "x"})
    assert "efficientnet-breakhis" in breakhis and "Patient-level cross-validation" in breakhis
    assert "efficientnet-idc" in default and "efficientnet-breakhis" not in default


@pytest.mark.data
def test_predictor_scores_real_breakhis_tiles():
    if not TILES.is_dir():
        pytest.skip(f"BreakHis tiles not found at {TILES} (set BREASTPATH_SHARED_DATA)")
    from breastpath.inference.predictor import Predictor

    files = []
    for cls in ("benign", "malignant"):
        files += sorted((TILES / cls).rglob("*.png"))[:3]
    predictor = Predictor.from_checkpoint("breakhis")
    probs = predictor.predict_proba(predictor.prepare([_load(f) for f in files]))
    assert probs.shape == (6, 2)
    assert np.all((probs >= 0) & (probs <= 1))
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    predictions = predictor.predict_sources(files)
    assert [p.label in ("benign", "malignant") for p in predictions] == [True] * 6
    assert all(p.is_cancer == (p.label == "malignant") for p in predictions)


def _load(path: Path) -> np.ndarray:
    from breastpath.imaging import decode_image

    return decode_image(path)


def test_the_bundled_model_stretches_a_whole_field_as_its_tiles_were_made(checkpoint):
    assert checkpoint.meta.input_fit == "stretch"
    assert checkpoint.meta.data["dataset"] == "breakhis-tiles"


@pytest.mark.data
def test_a_full_size_breakhis_field_is_scored_whole(checkpoint):
    fields = sorted((SHARED_DATA / "breakhis").rglob("*-200-*.png"))
    if not fields:
        pytest.skip(f"no 200X BreakHis field under {SHARED_DATA / 'breakhis'}")
    from fastapi.testclient import TestClient

    from breastpath.data.transforms import fit_to_size
    from breastpath.inference.predictor import Predictor
    from breastpath.serve.app import create_app

    field = _load(fields[0])
    assert field.shape == (460, 700, 3)
    predictor = Predictor(checkpoint, device="cpu")
    model_input, action = predictor.prepare_one(field)
    stretched, _ = fit_to_size(field, (224, 224), fit="stretch")
    assert action == "stretched"
    np.testing.assert_array_equal(model_input, predictor.normalize_stain(stretched[None])[0])
    with TestClient(create_app(predictor), raise_server_exceptions=False) as client:
        body = client.post(
            "/api/predict", files={"file": (fields[0].name, fields[0].read_bytes(), "image/png")}
        ).json()
    assert body["preprocessing"] == "stretched" and body["tiles"] is None
    expected = predictor.predict_images([field])[0].probability
    assert body["probability"] == pytest.approx(expected, abs=1e-6)
