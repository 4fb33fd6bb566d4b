"""The int8 runtime: a checkpoint quantized on its training patches, attached, verified and
served, and cross-validation folds rescored as quantized models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from breastpath.checkpoint import attach_int8, load_checkpoint, save_checkpoint
from breastpath.cli.main import main
from breastpath.data.cache import open_prepared
from breastpath.errors import CheckpointError, ConfigError
from breastpath.inference.predictor import Predictor

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


@pytest.fixture(scope="module")
def quantized(trained_run, prepared_idc, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "model"
    args = ["--checkpoint", str(trained_run), "--data", str(prepared_idc), "--out", str(out)]
    code = main(["quantize", *args, "--samples", "64"])
    assert code == 0
    return out.with_suffix(".json")


def _test_patches(prepared_idc):
    data = open_prepared(prepared_idc)
    return np.asarray(data.images[data.indices("test")]), data.labels[data.indices("test")]


def test_quantize_writes_a_verified_int8_copy_that_is_served_by_default(
    quantized, trained_run, monkeypatch
):
    monkeypatch.setattr("breastpath.inference.onnx.int8_kernels_exact", lambda: True)
    meta = json.loads(quantized.read_text())
    int8_file = quantized.parent / meta["int8_file"]
    assert meta["runtime"] == "int8" and int8_file.is_file()
    assert meta["int8_file"].startswith("model.int8-") and int8_file.suffix == ".onnx"
    assert meta["int8_calibration"]["samples"] == 64
    assert "train split" in meta["int8_calibration"]["source"]
    predictor = Predictor.from_checkpoint(quantized, device="cpu")
    assert predictor.runtime == "int8"
    assert predictor.can_explain  # Grad-CAM runs on the float weights beside it
    original = load_checkpoint(trained_run)
    assert load_checkpoint(quantized).tensors.keys() == original.model_state_prefixed().keys()


def test_the_int8_network_scores_close_to_the_float_one(quantized, prepared_idc):
    patches, _ = _test_patches(prepared_idc)
    served = Predictor.from_checkpoint(quantized, device="cpu", runtime="int8")
    int8 = served.predict_proba(patches)[:, 1]
    float32 = Predictor.from_checkpoint(quantized, device="cpu", runtime="torch")
    reference = float32.predict_proba(patches)[:, 1]
    assert not np.allclose(int8, reference, atol=1e-6)  # it really is another network
    assert np.abs(int8 - reference).mean() < 0.03
    assert np.abs(int8 - reference).max() < 0.2


def test_a_modified_or_missing_int8_file_is_refused(quantized, tmp_path):
    import shutil

    for path in quantized.parent.glob("model.*"):
        shutil.copy(path, tmp_path / path.name)
    copy = tmp_path / quantized.name
    int8_file = tmp_path / json.loads(copy.read_text())["int8_file"]
    int8_file.write_bytes(int8_file.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_checkpoint(copy)
    int8_file.unlink()
    with pytest.raises(CheckpointError, match=r"int8 model file .* is missing"):
        load_checkpoint(copy)


def test_runtime_int8_needs_an_attached_model(trained_run):
    with pytest.raises(CheckpointError, match="no int8 model is attached"):
        Predictor.from_checkpoint(trained_run, device="cpu", runtime="int8")
    meta = json.loads((trained_run / "best.json").read_text())
    from breastpath.checkpoint import parse_meta

    with pytest.raises(CheckpointError, match="no int8 model is attached"):
        parse_meta({**meta, "runtime": "int8"}, source="x")


def test_attaching_again_replaces_the_file_and_new_weights_drop_it(quantized, tmp_path):
    import shutil

    for path in quantized.parent.glob("model.*"):
        shutil.copy(path, tmp_path / path.name)
    copy = tmp_path / quantized.name
    before = sorted(p.name for p in tmp_path.glob("model.int8-*.onnx"))
    data = load_checkpoint(copy).int8
    assert data is not None
    attach_int8(copy, data + b"")  # same bytes: same name, nothing else left
    assert sorted(p.name for p in tmp_path.glob("model.int8-*.onnx")) == before
    attach_int8(copy, data, make_default=False)
    assert load_checkpoint(copy).meta.runtime == "torch"
    state = load_checkpoint(copy)
    save_checkpoint(tmp_path / "model", tensors=state.model_state_prefixed(), meta=state.meta)
    resaved = load_checkpoint(copy)
    assert resaved.int8 is None and resaved.meta.int8_file == ""


def test_calibration_images_must_match_the_input_size(trained_run):
    from breastpath.inference.quantize import quantize_int8

    wrong = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match="calibration images"):
        quantize_int8(load_checkpoint(trained_run), wrong)


def test_quantizing_an_exported_onnx_pair_is_refused(trained_run, prepared_idc, tmp_path, capsys):
    onnx = str(tmp_path / "m.onnx")
    assert main(["export", "--checkpoint", str(trained_run), "--out", onnx]) == 0
    code = main(
        [
            "quantize",
            "--checkpoint",
            onnx,
            "--data",
            str(prepared_idc),
            "--out",
            str(tmp_path / "q"),
        ]
    )
    assert code != 0
    assert "cannot be quantized" in capsys.readouterr().err
