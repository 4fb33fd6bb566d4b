"""ONNX export: the exported model matches torch to 1e-4 under onnxruntime."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from breastpath.checkpoint import build_model, load_checkpoint
from breastpath.cli.main import main
from breastpath.inference.onnx import OnnxForward

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def test_export_matches_torch_and_records_its_hash(tmp_path, capsys):
    assert main(["export", "default", "--out", str(tmp_path / "model.onnx")]) == 0
    data = (tmp_path / "model.onnx").read_bytes()
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["onnx_sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["class_names"] == ["non-IDC", "IDC"] and meta["input_size"] == [50, 50]

    model = build_model(load_checkpoint("default")).eval()
    x = torch.randn(37, 3, 50, 50, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x).numpy()
    got = OnnxForward(data)(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_invalid_onnx_bytes_are_refused():
    from breastpath.errors import CheckpointError

    with pytest.raises(CheckpointError, match="invalid ONNX"):
        OnnxForward(b"not an onnx model")


def test_predictor_onnx_runtime_matches_torch():
    from breastpath.inference.predictor import Predictor

    batch = np.random.default_rng(0).integers(0, 256, size=(20, 50, 50, 3), dtype=np.uint8)
    expected = Predictor.from_checkpoint("default").predict_proba(batch)
    got = Predictor.from_checkpoint("default", runtime="onnx").predict_proba(batch)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
