"""``breastpath serve --runtime onnx``: the API scores with onnxruntime like it does with torch."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastpath.inference.predictor import Predictor
from breastpath.serve.app import create_app
from conftest import synthetic_patch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clients():
    out = {}
    with (
        TestClient(create_app(Predictor.from_checkpoint("default"))) as torch_client,
        TestClient(create_app(Predictor.from_checkpoint("default", runtime="onnx"))) as onnx_client,
    ):
        out["torch"], out["onnx"] = torch_client, onnx_client
        yield out


def test_onnx_runtime_answers_like_torch(clients):
    rng = np.random.default_rng(3)
    patch = _png(synthetic_patch(rng, 1))  # an H&E-like 50x50 patch
    large = _png(np.concatenate([synthetic_patch(rng, i % 2) for i in range(3)], axis=1))  # tiles
    results = {}
    for runtime, client in clients.items():
        one = client.post("/api/predict", files={"file": ("p.png", patch, "image/png")})
        files = [("files", ("p.png", patch, "image/png")), ("files", ("l.png", large, "image/png"))]
        many = client.post("/api/predict/batch", files=files)
        assert one.status_code == many.status_code == 200, (one.text, many.text)
        assert one.json()["model"]["runtime"] == runtime
        results[runtime] = (one.json(), many.json()["results"])
    (one_torch, many_torch), (one_onnx, many_onnx) = results["torch"], results["onnx"]
    assert one_onnx["probability"] == pytest.approx(one_torch["probability"], abs=1e-4)
    assert one_onnx["label"] == one_torch["label"]
    for a, b in zip(many_onnx, many_torch, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-4)
    tiles_onnx, tiles_torch = many_onnx[1]["tiles"], many_torch[1]["tiles"]
    assert tiles_onnx is not None and np.shape(tiles_onnx["probabilities"]) == (1, 3)
    np.testing.assert_allclose(tiles_onnx["probabilities"], tiles_torch["probabilities"], atol=1e-4)


def test_onnx_runtime_still_explains_with_torch(clients):
    patch = _png(synthetic_patch(np.random.default_rng(4), 1))
    response = clients["onnx"].post(
        "/api/predict?explain=true", files={"file": ("p.png", patch, "image/png")}
    )
    assert response.status_code == 200, response.text
    explain = response.json()["explain"]
    assert explain["method"] == "grad-cam" and explain["gradcam_png"]
    assert clients["onnx"].get("/api/models").json()["models"][0]["runtime"] == "onnx"
