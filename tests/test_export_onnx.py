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
    assert main(["export", "--checkpoint", "default", "--out", str(tmp_path / "model.onnx")]) == 0
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
    expected = Predictor.from_checkpoint("default", runtime="torch").predict_proba(batch)
    got = Predictor.from_checkpoint("default", runtime="onnx").predict_proba(batch)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


# -- the tool consumes its own export ------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    assert main(["export", "--checkpoint", "default", "--out", str(out)]) == 0
    return out


def _csv_rows(path):
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.data
def test_predict_with_the_exported_pair_matches_the_torch_model(exported, shared_data, tmp_path):
    patches = sorted((shared_data / "idc").rglob("*.png"))[:64]
    folder = tmp_path / "patches"
    folder.mkdir()
    for path in patches:
        (folder / path.name).write_bytes(path.read_bytes())
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                "default",
                "--runtime",
                "torch",
                str(folder),
                "--out",
                str(tmp_path / "torch.csv"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(exported),
                str(folder),
                "--out",
                str(tmp_path / "onnx.csv"),
            ]
        )
        == 0
    )
    torch_rows, onnx_rows = _csv_rows(tmp_path / "torch.csv"), _csv_rows(tmp_path / "onnx.csv")
    assert [r["path"] for r in onnx_rows] == [r["path"] for r in torch_rows]
    scored = [(a, b) for a, b in zip(onnx_rows, torch_rows, strict=True) if b["probability"]]
    assert len(scored) > 32
    for a, b in scored:
        assert float(a["probability"]) == pytest.approx(float(b["probability"]), abs=1e-4)


def test_an_exported_pair_loads_without_torch_weights_and_cannot_explain(exported):
    from breastpath.errors import CheckpointError, ExplanationUnavailableError
    from breastpath.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(exported)
    assert predictor.runtime == "onnx" and predictor.model is None
    assert predictor.describe()["explanations"] is False
    batch = np.zeros((2, 50, 50, 3), np.uint8)
    assert predictor.predict_proba(batch).shape == (2, 2)
    with pytest.raises(ExplanationUnavailableError):
        predictor.grad_cam(batch, target_class=1)
    with pytest.raises(CheckpointError, match="runtime onnx"):
        Predictor.from_checkpoint(exported, runtime="torch")


def test_a_modified_onnx_file_is_refused(exported, tmp_path):
    from breastpath.errors import CheckpointError

    for suffix in (".onnx", ".json"):
        (tmp_path / f"m{suffix}").write_bytes(exported.with_suffix(suffix).read_bytes())
    data = bytearray((tmp_path / "m.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "m.onnx").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path / "m.onnx")


def test_serve_answers_explain_with_unavailable_for_an_onnx_model(exported):
    from fastapi.testclient import TestClient

    from breastpath.inference.predictor import Predictor
    from breastpath.serve.app import create_app

    patch = np.full((50, 50, 3), (200, 120, 170), np.uint8)
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(patch).save(buffer, format="PNG")
    with TestClient(create_app(Predictor.from_checkpoint(exported))) as client:
        response = client.post(
            "/api/predict?explain=true", files={"file": ("p.png", buffer.getvalue(), "image/png")}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["probability"] is not None
    assert body["explain"]["available"] is False
    assert "unavailable" in body["explain"]["reason"]


@pytest.mark.parametrize("network", ["float", "int8"])
def test_onnxruntime_alone_gives_breastpaths_probabilities(network, tmp_path, capsys):
    """An ONNX user who reads the `probabilities` output gets what breastpath reports, for the
    float network and for the int8 copy the bundled default serves."""
    import onnxruntime as ort

    from breastpath.data.transforms import to_model_array
    from breastpath.inference.predictor import Predictor

    code = main(["export", "--checkpoint", "default", "--network", network, "--out",
                 str(tmp_path / "m.onnx")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert f"the {network} network" in capsys.readouterr().out
    body = json.loads((tmp_path / "m.json").read_text())
    assert body["onnx_network"] == network and set(body["onnx_outputs"]) == {
        "logits",
        "probabilities",
    }
    runtime = "torch" if network == "float" else "int8"
    predictor = Predictor.from_checkpoint("default", runtime=runtime)
    if predictor.runtime != runtime:
        pytest.skip(f"runtime {runtime} is not served on this CPU ({predictor.runtime_note})")
    rng = np.random.default_rng(0)
    images = rng.integers(60, 230, (16, 50, 50, 3), dtype=np.uint8)
    batch = predictor.prepare(list(images))
    expected = predictor.predict_proba(batch)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    mean, std = np.asarray(predictor.meta.mean), np.asarray(predictor.meta.std)
    x = to_model_array(batch, mean=mean, std=std)
    (probs,) = session.run(["probabilities"], {"input": x})
    np.testing.assert_allclose(probs, expected, atol=2e-4)
