"""The web API on real images from ``../shared/data`` (IDC patches, BreakHis images and tiles)."""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from breastpath.imaging import decode_image

pytestmark = pytest.mark.data


def _idc(shared_data, label: int, count: int) -> list:
    files = sorted((shared_data / "idc").glob(f"*/{label}/*.png"))
    assert files, f"no class-{label} IDC patches under {shared_data / 'idc'}"
    step = max(1, len(files) // count)
    return files[::step][:count]


def _post(client, path, explain: bool = False):
    url = "/api/predict?explain=true" if explain else "/api/predict"
    return client.post(url, files={"file": (path.name, path.read_bytes(), "image/png")})


def test_real_patches_score_as_the_predictor_does(client, predictor, shared_data):
    for path in _idc(shared_data, 1, 3) + _idc(shared_data, 0, 3):
        response = _post(client, path)
        assert response.status_code == 200, response.text
        expected = predictor.predict_images([decode_image(path)])[0]
        assert response.json()["probability"] == pytest.approx(expected.probability, abs=1e-6)


def test_bundled_model_separates_real_classes_in_a_batch(client, shared_data):
    files = _idc(shared_data, 1, 30) + _idc(shared_data, 0, 30)
    response = client.post(
        "/api/predict/batch",
        files=[("files", (p.name, p.read_bytes(), "image/png")) for p in files],
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert all(r["ok"] for r in results)
    positive = np.mean([r["probability"] for r in results[:30]])
    negative = np.mean([r["probability"] for r in results[30:]])
    assert positive > negative + 0.2, (positive, negative)


def test_real_patch_explanation(client, shared_data):
    path = _idc(shared_data, 1, 1)[0]
    body = _post(client, path, explain=True).json()
    explain = body["explain"]
    assert explain["target_class"] == "IDC"
    for key in ("input_png", "gradcam_png"):
        picture = Image.open(io.BytesIO(base64.b64decode(explain[key])))
        assert picture.format == "PNG" and picture.size == (250, 250)


def test_real_edge_patch_is_padded(client, shared_data):
    short = next(
        p for p in sorted((shared_data / "idc").glob("*/*/*.png")) if Image.open(p).size != (50, 50)
    )
    body = _post(client, short).json()
    assert body["preprocessing"] == "padded" and body["tiles"] is None


def test_breakhis_image_is_tiled(client, shared_data):
    files = sorted((shared_data / "breakhis").rglob("*.png"))
    if not files:
        pytest.skip("no BreakHis images in the shared data")
    body = _post(client, files[0], explain=True).json()
    assert body["image"] == {"width": 700, "height": 460}
    tiles = body["tiles"]
    assert (tiles["rows"], tiles["cols"]) == (10, 14)
    assert tiles["assessed_count"] > 0 and 0.0 <= tiles["extent"] <= 1.0
    assert len(tiles["probabilities"]) == 10 and len(tiles["probabilities"][0]) == 14
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["explain"]["tiles_png"])))
    assert heatmap.size == (512, 336)


def test_breakhis_tiles_in_a_zip(client, shared_data):
    files = sorted((shared_data / "breakhis-tiles").rglob("*.png"))[:4]
    if not files:
        pytest.skip("no BreakHis tiles in the shared data")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in files:
            bundle.write(path, f"tiles/{path.name}")
    response = client.post(
        "/api/predict/batch", files=[("files", ("tiles.zip", buffer.getvalue(), "application/zip"))]
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [p.name for p in files]
    for result in results:
        assert result["ok"] and result["image"] == {"width": 224, "height": 224}
        assert result["tiles"]["count"] == 25  # 224 = 4 x 50 + 24: 5 x 5 tiles
