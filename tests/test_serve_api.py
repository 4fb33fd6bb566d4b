"""The web API: page, health, models, predictions, and 4xx (never 500) on bad uploads."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastpath.imaging import decode_image
from breastpath.inference.predictor import Predictor
from breastpath.serve.app import ServeLimits, create_app
from conftest import synthetic_patch


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _patch(label: int = 1, size=(50, 50), seed: int = 0) -> np.ndarray:
    return synthetic_patch(np.random.default_rng(seed), label, size=size)


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return Predictor.from_checkpoint(trained_run)


@pytest.fixture(scope="module")
def best_meta(trained_run) -> dict:
    return json.loads((trained_run / "best.json").read_text(encoding="utf-8"))


def _post(client, data: bytes, name: str = "patch.png", content_type: str = "image/png"):
    return client.post("/api/predict", files={"file": (name, data, content_type)})


def _assert_client_error(response, status: int | None = None) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert detail
    return detail if isinstance(detail, str) else json.dumps(detail)


# -- pages and metadata ---------------------------------------------------------------------------


def test_index_page_is_self_contained(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert re.search(r"<input[^>]*type=\"file\"", html)
    assert "/api/predict" in html
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"(src|href)=\"//", html)  # no protocol-relative CDN links either


def test_health(client, predictor):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": predictor.name}


def test_models_lists_the_checkpoint(client, best_meta):
    response = client.get("/api/models")
    assert response.status_code == 200
    models = response.json()["models"]
    assert len(models) == 1
    model = models[0]
    assert model["classes"] == best_meta["class_names"]
    assert model["threshold"] == pytest.approx(best_meta["threshold"])
    assert model["input_size"] == list(best_meta["input_size"])
    assert model["model"] == best_meta["model"]["name"]
    assert model["checkpoint"] == "best.json"


# -- predictions ----------------------------------------------------------------------------------


def test_predict_patch_matches_the_predictor(client, predictor, best_meta):
    data = _png(_patch(label=1))
    response = _post(client, data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert body["label"] in best_meta["class_names"]
    assert body["threshold"] == round(best_meta["threshold"], 6)  # the API rounds to 6
    assert body["is_cancer"] == (body["probability"] >= best_meta["threshold"])
    assert body["label"] == best_meta["class_names"][int(body["is_cancer"])]
    assert set(body["probabilities"]) == set(best_meta["class_names"])
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["image"] == {"width": 50, "height": 50}
    assert body["model"]["name"] == predictor.name
    assert body["seconds"] >= 0
    expected = predictor.predict_images([decode_image(data)])[0]
    assert body["probability"] == pytest.approx(expected.probability, abs=1e-6)


def test_predictions_differ_between_images(client):
    # the endpoint scores the uploaded pixels, not a constant
    probabilities = {
        round(_post(client, _png(_patch(label, seed=seed))).json()["probability"], 6)
        for label, seed in ((0, 1), (1, 2), (0, 3))
    }
    assert len(probabilities) > 1


def test_larger_image_is_accepted(client, predictor):
    data = _png(_patch(label=0, size=(200, 300), seed=5))
    response = _post(client, data, name="large.png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": 300, "height": 200}
    assert 0.0 <= body["probability"] <= 1.0
    expected = predictor.predict_images([decode_image(data)])[0]
    assert body["probability"] == pytest.approx(expected.probability, abs=1e-6)


def test_jpeg_upload_is_accepted(client):
    buffer = io.BytesIO()
    Image.fromarray(_patch(seed=9)).save(buffer, format="JPEG")
    response = _post(client, buffer.getvalue(), name="patch.jpg", content_type="image/jpeg")
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()["probability"] <= 1.0


# -- bad input: 4xx with a JSON detail, never 500 --------------------------------------------------


def test_missing_file_field(client):
    assert _assert_client_error(client.post("/api/predict"), 422)
    response = client.post("/api/predict", data={"other": "x"})
    _assert_client_error(response, 422)


def test_empty_upload(client):
    detail = _assert_client_error(_post(client, b"", name="empty.png"))
    assert "empty" in detail


def test_text_upload(client):
    response = _post(client, b"hello, not an image\n" * 20, name="notes.png")
    detail = _assert_client_error(response)
    assert "notes.png" in detail


def test_truncated_png(client):
    data = _png(_patch(size=(80, 80)))
    detail = _assert_client_error(_post(client, data[: len(data) // 2], name="cut.png"))
    assert "cut.png" in detail


def test_random_bytes(client):
    noise = np.random.default_rng(4).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    _assert_client_error(_post(client, noise, name="noise.bin", content_type="application/x"))


def test_upload_above_size_limit(predictor):
    app = create_app(predictor, limits=ServeLimits(max_upload_bytes=1000))
    with TestClient(app, raise_server_exceptions=False) as small:
        big = _png(_patch(size=(60, 60)))
        assert len(big) > 1000
        detail = _assert_client_error(_post(small, big), 413)
        assert "1000" in detail
        tiny = _png(np.full((4, 4, 3), 200, dtype=np.uint8))
        assert len(tiny) <= 1000
        assert _post(small, tiny).status_code == 200


def test_declared_oversized_request_is_refused_before_parsing(predictor):
    app = create_app(predictor, limits=ServeLimits(max_upload_bytes=1000))
    with TestClient(app, raise_server_exceptions=False) as small:
        body = b"x" * 200_000  # far above the limit plus multipart overhead
        response = small.post(
            "/api/predict",
            content=body,
            headers={"content-type": "multipart/form-data; boundary=zzz"},
        )
        assert response.status_code == 413
        assert "1000" in response.json()["detail"]


def test_image_above_pixel_limit(predictor):
    app = create_app(predictor, limits=ServeLimits(max_pixels=100))
    with TestClient(app, raise_server_exceptions=False) as small:
        detail = _assert_client_error(_post(small, _png(_patch(size=(20, 20))), name="big.png"))
        assert "big.png" in detail and "20x20" in detail
        assert _post(small, _png(_patch(size=(10, 10)))).status_code == 200


def test_float_image_is_a_client_error(client):
    buffer = io.BytesIO()
    Image.new("F", (5, 5), 0.5).save(buffer, format="TIFF")
    _assert_client_error(_post(client, buffer.getvalue(), name="float.tif"))


# -- real data ------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_idc_patch(client, shared_data, best_meta):
    files = sorted((shared_data / "idc").glob("*/*/*.png"))
    if not files:
        files = sorted((shared_data / "idc").rglob("*.png"))
    assert files, f"no PNG under {shared_data / 'idc'}"
    path = files[0]
    response = _post(client, path.read_bytes(), name=path.name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert body["label"] in best_meta["class_names"]
    height, width = decode_image(path).shape[:2]
    assert body["image"] == {"width": width, "height": height}


# -- explanations and batches with a freshly trained checkpoint -----------------------------------


def test_explain_with_a_trained_checkpoint(client, best_meta):
    response = client.post(
        "/api/predict?explain=true", files={"file": ("p.png", _png(_patch(seed=11)), "image/png")}
    )
    assert response.status_code == 200, response.text
    explain = response.json()["explain"]
    assert explain["target_class"] == best_meta["class_names"][-1]
    for key in ("input_png", "gradcam_png"):
        assert Image.open(io.BytesIO(base64.b64decode(explain[key]))).format == "PNG"
    assert explain["stain"]["available"] is False  # this checkpoint carries no normalizer


def test_batch_with_a_trained_checkpoint(client, predictor):
    files = [
        ("files", (f"p{i}.png", _png(_patch(i % 2, seed=20 + i)), "image/png")) for i in range(4)
    ]
    files.append(("files", ("bad.png", b"nope", "image/png")))
    body = client.post("/api/predict/batch", files=files).json()
    assert body["summary"]["ok"] == 4 and body["summary"]["failed"] == 1
    expected = predictor.predict_images([_patch(i % 2, seed=20 + i) for i in range(4)])
    for result, prediction in zip(body["results"][:4], expected, strict=True):
        assert result["probability"] == pytest.approx(prediction.probability, abs=1e-6)
