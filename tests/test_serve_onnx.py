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
        TestClient(
            create_app(Predictor.from_checkpoint("default", runtime="torch"))
        ) as torch_client,
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


def test_the_bundled_default_serves_its_int8_network_and_explains_with_torch(monkeypatch):
    """The default checkpoint's own runtime is int8: on a CPU whose int8 kernels are exact the
    API scores with the quantized network (close to the float one, not equal) and Grad-CAM
    still answers from the float weights (tests/test_int8_cpu.py: the other CPUs)."""
    monkeypatch.setattr("breastpath.inference.onnx.int8_kernels_exact", lambda: True)
    rng = np.random.default_rng(5)
    patches = [synthetic_patch(rng, i % 2) for i in range(6)]
    served = Predictor.from_checkpoint("default")
    assert served.runtime == "int8"
    float_p = Predictor.from_checkpoint("default", runtime="torch").predict_proba(np.stack(patches))
    int8_p = served.predict_proba(np.stack(patches))
    assert not np.allclose(int8_p, float_p, atol=1e-6)  # it is the quantized network
    with TestClient(create_app(served)) as client:
        response = client.post(
            "/api/predict?explain=true", files={"file": ("p.png", _png(patches[1]), "image/png")}
        )
    body = response.json()
    assert response.status_code == 200 and body["model"]["runtime"] == "int8"
    assert body["probability"] == pytest.approx(float(int8_p[1, 1]), abs=1e-5)
    assert body["explain"]["method"] == "grad-cam" and body["explain"]["gradcam_png"]


def test_on_real_patches_the_int8_default_decides_as_its_float_network(shared_data, tmp_path):
    """On tissue like the training patches (where its activation ranges come from), the
    default as served on this CPU stays within a few hundredths of the float network and makes
    the same call on at least 95% of patches (measured with int8 kernels that are exact: mean
    0.022, 97.8% on 2,000 patches; where they saturate, the int8 network alone changed 13.9%
    and the float network is served instead)."""
    from breastpath.data.cache import open_prepared
    from breastpath.data.prepare import prepare

    prepare([shared_data / "idc"], tmp_path / "idc")
    data = open_prepared(tmp_path / "idc")
    rows = np.random.default_rng(0).choice(len(data.labels), size=1000, replace=False)
    patches = np.asarray(data.images[np.sort(rows)])
    served = Predictor.from_checkpoint("default")
    int8_p = served.predict_proba(patches)[:, 1]
    float_p = Predictor.from_checkpoint("default", runtime="torch").predict_proba(patches)[:, 1]
    assert np.abs(int8_p - float_p).mean() < 0.04
    agree = ((int8_p >= served.threshold) == (float_p >= served.threshold)).mean()
    assert agree >= 0.95
