"""The checkpoint contract: typed metadata validated on load, old files still load, one score."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from breastpath.checkpoint import (
    CheckpointMeta,
    assets_dir,
    build_model,
    load_checkpoint,
    parse_meta,
    resolve_checkpoint,
)
from breastpath.cli.main import main
from breastpath.config import DataConfig, TrainConfig
from breastpath.data.cache import open_prepared
from breastpath.data.prepare import prepare
from breastpath.errors import CheckpointError
from breastpath.evaluate.metrics import choose_threshold
from breastpath.inference.batches import predict_rows
from breastpath.inference.predictor import Predictor
from breastpath.inference.score import cancer_score, cancer_truth
from breastpath.train.loop import train
from conftest import make_breakhis_tiles, save_png, synthetic_patch


def test_bundled_checkpoints_written_by_0_1_still_load():
    idc = load_checkpoint("default").meta
    assert isinstance(idc, CheckpointMeta)
    assert idc.cancer_classes == (1,) and idc.class_names == ("non-IDC", "IDC")
    assert "positive_index" not in idc.to_dict()  # dropped: cancer_classes says it
    breakhis = load_checkpoint("breakhis").meta
    # three meanings of "input size" become two named fields
    assert breakhis.input_size == (224, 224) and breakhis.working_size == (160, 160)
    assert breakhis.extra["crossval"]["folds"] >= 3  # unknown keys are kept verbatim


def test_the_predictor_applies_the_logit_bias_before_the_temperature(tmp_path):
    """``softmax((logits + logit_bias) / temperature)``: what the build scripts' Platt scaling
    stores, and what their moved threshold assumes."""
    import torch

    from breastpath.data.transforms import to_model_input
    from breastpath.evaluate.calibration import with_temperature

    checkpoint = load_checkpoint("default")
    raw_meta = checkpoint.meta.replace(temperature=1.0, logit_bias=None, threshold=0.5)
    scaled_meta = with_temperature(raw_meta, 2.0, shift=-1.5, rule="test")
    assert scaled_meta.logit_bias == (0.0, -1.5)
    rng = np.random.default_rng(0)
    batch = np.stack([synthetic_patch(rng, i % 2) for i in range(8)])
    model = build_model(checkpoint).eval()
    with torch.no_grad():
        x = to_model_input(
            torch.from_numpy(batch),
            mean=torch.tensor(raw_meta.mean),
            std=torch.tensor(raw_meta.std),
            device="cpu",
        )
        logits = model(x).double()
    expected = torch.softmax((logits + torch.tensor([0.0, -1.5], dtype=torch.float64)) / 2.0, 1)
    for meta, want in ((raw_meta, torch.softmax(logits, 1)), (scaled_meta, expected)):
        predictor = Predictor(
            dataclasses.replace(checkpoint, meta=meta), device="cpu", runtime="torch"
        )
        np.testing.assert_allclose(predictor.predict_proba(batch), want.numpy(), atol=1e-5)
    raw_decisions = Predictor(dataclasses.replace(checkpoint, meta=raw_meta), device="cpu")
    scaled = Predictor(dataclasses.replace(checkpoint, meta=scaled_meta), device="cpu")
    assert np.array_equal(  # the threshold moved with the scaling: no decision changes
        raw_decisions.predict_proba(batch)[:, 1] >= raw_meta.threshold,
        scaled.predict_proba(batch)[:, 1] >= scaled_meta.threshold,
    )


def _copy_default(tmp_path: Path) -> Path:
    source = resolve_checkpoint("default")
    for path in source.parent.glob(f"{source.stem}.*"):  # the JSON, weights and int8 network
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / source.name


def _with(path: Path, key: str, value: object) -> Path:
    raw = json.loads(path.read_text())
    target = raw
    *parents, leaf = key.split(".")
    for part in parents:
        target = target[part]
    target[leaf] = value
    path.write_text(json.dumps(raw))
    return path


BAD_FIELDS = [
    ("threshold", float("nan")),
    ("threshold", "0.5"),
    ("threshold", 1.5),
    ("input_size", [10**9, 50]),
    ("input_size", "50x50"),
    ("mean", [0.5, 0.5]),
    ("std", [0.2, 0.0, 0.2]),
    ("class_names", ["only-one"]),
    ("class_names", ["IDC", "IDC"]),
    ("cancer_classes", [5]),
    ("cancer_classes", [0, 1]),
    ("model.name", "no_such_net"),
    ("model.num_classes", 3),
    ("model.args", {"bogus": 1}),
    ("model.args", ["widths"]),
    ("tta", "sideways"),
    ("runtime", "tensorrt"),
    ("epoch", -1),
    ("stain", "vahadane"),
    ("mpp", -0.25),
    ("logit_bias", [0.0]),
    ("logit_bias", [0.0, float("inf")]),
    ("logit_bias", "shift"),
    ("input_fit", "squash"),
]


@pytest.mark.parametrize(("key", "value"), BAD_FIELDS, ids=[f"{k}={v!r}" for k, v in BAD_FIELDS])
def test_a_wrong_field_is_a_checkpoint_error_naming_it(tmp_path, key, value):
    path = _with(_copy_default(tmp_path), key, value)
    with pytest.raises(CheckpointError, match=f"field '{key.split('.')[0]}"):
        load_checkpoint(path)


def test_absurd_model_arguments_fail_before_any_allocation(tmp_path):
    # 10^6 channels would need terabytes: the layout check on the meta device refuses it first
    absurd = {"name": "cancernet", "num_classes": 2, "args": {"widths": [10**6, 10**6, 10**6]}}
    path = _with(_copy_default(tmp_path), "model", absurd)
    with pytest.raises(CheckpointError, match="do not match"):
        build_model(load_checkpoint(path))


def test_the_cli_answers_a_bad_field_in_one_line(tmp_path, capsys):
    path = _with(_copy_default(tmp_path), "threshold", float("nan"))
    save_png(tmp_path / "patch.png", synthetic_patch(np.random.default_rng(0), 1))
    assert main(["predict", "--checkpoint", str(path), str(tmp_path / "patch.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "field 'threshold'" in err and "Traceback" not in err


def test_metadata_round_trips_and_replace_validates():
    meta = load_checkpoint("default").meta
    assert parse_meta(meta.to_dict(), source="copy") == meta
    assert meta.replace(threshold=0.25).threshold == 0.25
    with pytest.raises(CheckpointError, match="threshold"):
        meta.replace(threshold=float("inf"))


# -- one cancer score: the threshold is chosen on the score it is applied to ---------------------

TINY_NET = {"widths": [8, 16, 16], "hidden": 32}
SUBTYPES = [  # two benign and three malignant subtypes
    ("benign", "fibroadenoma", 0),
    ("benign", "tubular_adenoma", 0),
    ("malignant", "ductal_carcinoma", 1),
    ("malignant", "lobular_carcinoma", 1),
    ("malignant", "papillary_carcinoma", 1),
]


def _tint(image: np.ndarray, c: int) -> np.ndarray:
    """Each subtype its own colour cast (one channel raised)."""
    channel = image[..., c % 3].astype(int) + 25 * (1 + c // 3)
    image[..., c % 3] = np.clip(channel, 0, 255).astype(np.uint8)
    return image


@pytest.fixture(scope="module")
def subtype_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("subtypes")
    make_breakhis_tiles(root / "tiles", SUBTYPES, slides=4, tiles=4, size=(48, 48), tint=_tint)
    prepare(
        [root / "tiles"],
        root / "prep",
        config=DataConfig(task="subtype", image_size=32, test_frac=0.2, val_frac=0.5),
    )
    config = TrainConfig.from_dict(
        {"epochs": 2, "batch_size": 8, "progress": False, "model_args": TINY_NET}
    )
    train(root / "prep", root / "run", config)
    return root / "prep", root / "run"


def test_a_three_malignant_subtype_model_thresholds_the_malignant_sum(subtype_run):
    import torch

    prep, run = subtype_run
    data = open_prepared(prep)
    checkpoint = load_checkpoint(run)
    meta = checkpoint.meta
    assert [meta.class_names[i] for i in meta.cancer_classes] == [
        "ductal_carcinoma",
        "lobular_carcinoma",
        "papillary_carcinoma",
    ]
    rows = data.indices("val")
    probs = predict_rows(
        build_model(checkpoint),
        data.images,
        rows,
        mean=torch.tensor(meta.mean),
        std=torch.tensor(meta.std),
    )
    truth, score = cancer_truth(data.labels[rows], meta), cancer_score(probs, meta)
    assert truth.sum() > 0 and (1 - truth).sum() > 0
    expected = choose_threshold(truth, score, criterion="balanced_accuracy")
    assert meta.threshold == pytest.approx(expected, abs=1e-6)
    # the Predictor applies the threshold to that same score
    predictor = Predictor(checkpoint)
    decided = [p.is_cancer for p in predictor.to_predictions(probs)]
    assert decided == [bool(s >= meta.threshold) for s in score]


def test_a_model_trained_on_breakhis_tiles_stretches_whole_fields(subtype_run, tmp_path):
    """The tiles are whole fields resized without keeping their aspect: a model trained on them
    sees a new field the same way, through the CLI and the API alike."""
    from fastapi.testclient import TestClient
    from PIL import Image

    from breastpath.serve.app import create_app

    _, run = subtype_run
    checkpoint = load_checkpoint(run)
    assert checkpoint.meta.data["dataset"] == "breakhis-tiles"
    assert checkpoint.meta.input_fit == "stretch"
    assert load_checkpoint("default").meta.input_fit == "crop"  # IDC patches: crops of a slide
    field = np.full((92, 140, 3), 120, np.uint8)  # a 700x460-shaped field, its left fifth dark
    field[:, :28] = 30
    predictor = Predictor(checkpoint, device="cpu")
    model_input, action = predictor.prepare_one(field)
    assert action == "stretched" and model_input.shape == (32, 32, 3)
    assert model_input[:, :5].max() < 60  # the edge a centre crop would have cut is there
    path = tmp_path / "field.png"
    Image.fromarray(field).save(path)
    with TestClient(create_app(predictor), raise_server_exceptions=False) as client:
        response = client.post(
            "/api/predict", files={"file": ("field.png", path.read_bytes(), "image/png")}
        )
    body = response.json()
    assert response.status_code == 200, response.text
    assert body["preprocessing"] == "stretched" and body["tiles"] is None
    assert "whole fields" in body["note"]
    expected = predictor.predict_images([field], allow_non_tissue=True)[0].probability
    assert body["probability"] == pytest.approx(expected, abs=1e-6)


def test_cancer_score_is_the_sum_of_the_cancer_classes():
    probs = np.array([[0.1, 0.1, 0.2, 0.3, 0.3], [0.6, 0.3, 0.0, 0.0, 0.1]])
    assert cancer_score(probs, [2, 3, 4]).round(6).tolist() == [0.8, 0.1]
    assert cancer_truth(np.array([0, 1, 2, 3, 4]), [2, 3, 4]).tolist() == [0, 0, 1, 1, 1]


def test_assets_are_where_the_bundled_names_point():
    assert resolve_checkpoint("default").parent == assets_dir()


def test_update_checkpoint_json_keeps_the_weights_and_validates(tmp_path):
    from breastpath.checkpoint import read_meta, update_checkpoint_json

    json_path = _copy_default(tmp_path).with_suffix(".json")
    original = json_path.read_text()
    before, after = update_checkpoint_json(json_path, {"mpp": 2.0}, write=False)
    assert (before.mpp, after.mpp) == (4.0, 2.0) and json_path.read_text() == original
    _, written = update_checkpoint_json(json_path, {"mpp": 2.0}, write=True)
    assert read_meta(json_path).mpp == 2.0 == written.mpp
    assert read_meta(json_path).weights_sha256 == before.weights_sha256
    with pytest.raises(CheckpointError, match="weights reference"):
        update_checkpoint_json(json_path, {"weights_sha256": "0" * 64}, write=True)
    with pytest.raises(CheckpointError):
        update_checkpoint_json(json_path, {"verdict": {"threshold": 2.0}}, write=True)
    assert read_meta(json_path).mpp == 2.0  # a refused change wrote nothing
