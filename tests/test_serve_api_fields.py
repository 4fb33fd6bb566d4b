"""Issue 32, items 6-8: the API's numbers, the quality gate's field names and the 422 of a wrong
upload field, on the bundled default model."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from conftest import synthetic_patch


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _photo(height: int = 120, width: int = 160) -> np.ndarray:
    """A textured green-blue field: luminous like tissue, coloured like no H&E stain."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(3).random((height, width)), 2.0)
    t = (field - field.min()) / np.ptp(field)
    leaf, sky = np.array([60, 150, 70]), np.array([70, 130, 200])
    return np.round(leaf + t[..., None] * (sky - leaf)).astype(np.uint8)


def _floats(value):
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _floats(item)
    elif isinstance(value, list):
        for item in value:
            yield from _floats(item)


def _decimals(number: float) -> int:
    text = repr(number)
    assert "e" not in text or abs(number) < 1e-6, text
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


@pytest.mark.parametrize("field", ["image", "upload"])
def test_a_wrong_field_name_names_the_expected_field(client, field):
    response = client.post("/api/predict", files={field: ("p.png", b"x", "image/png")})
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"detail", "errors"} and isinstance(body["detail"], str)
    assert "missing the multipart field 'file'" in body["detail"]
    assert "-F file=@" in body["detail"] and f"sent '{field}'" in body["detail"]
    assert body["errors"][0]["loc"] == ["body", "file"]


def test_a_batch_with_a_wrong_field_name_names_files(client):
    response = client.post("/api/predict/batch", files={"file": ("p.png", b"x", "image/png")})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "missing the multipart field 'files'" in detail and "sent 'file'" in detail
    nothing = client.post("/api/predict/batch")
    assert "this request sent no multipart fields" in nothing.json()["detail"]


def test_other_validation_errors_keep_their_place(client):
    files = {"file": ("p.png", _png(synthetic_patch(np.random.default_rng(0), 1)), "image/png")}
    response = client.post("/api/predict?explain=maybe", files=files)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("invalid request: query.explain: ")


def test_every_float_has_at_most_six_decimals(client):
    rng = np.random.default_rng(1)
    large = synthetic_patch(rng, 1, size=(120, 160))
    one = client.post("/api/predict", files={"file": ("big.png", _png(large), "image/png")})
    assert one.status_code == 200
    result = one.json()
    assert result["tiles"] is not None  # the tile values are in the same answer
    numbers = list(_floats(result))
    assert len(numbers) > 20
    assert max(_decimals(x) for x in numbers) <= 6, sorted(numbers, key=_decimals)[-3:]
    assert result["threshold"] == round(result["threshold"], 6)
    assert result["probability"] == round(result["probability"], 6)

    batch = client.post(
        "/api/predict/batch", files=[("files", ("a.png", _png(large), "image/png"))]
    ).json()
    assert max(_decimals(x) for x in _floats(batch)) <= 6
    models = client.get("/api/models").json()
    assert max(_decimals(x) for x in _floats(models)) <= 6
    # nothing printed with more digits anywhere in the text either
    assert not re.search(r"\d\.\d{7,}", json.dumps(result["probabilities"]))


def test_quality_fields_say_what_they_measure(client):
    photo = client.post("/api/predict", files={"file": ("photo.png", _png(_photo()), "image/png")})
    assert photo.status_code == 200
    quality = photo.json()["quality"]
    assert photo.json()["label"] is None
    assert quality["has_tissue_pixels"] is True and quality["he_colours"] is False
    assert "H&E" in quality["reason"]
    # the old names, deprecated, carry the same values for one release
    assert quality["is_tissue"] is quality["has_tissue_pixels"]
    assert quality["looks_like_he"] is quality["he_colours"]
    keys = list(quality)
    assert keys.index("has_tissue_pixels") < keys.index("is_tissue")

    patch = synthetic_patch(np.random.default_rng(0), 1)
    tissue = client.post("/api/predict", files={"file": ("p.png", _png(patch), "image/png")})
    q = tissue.json()["quality"]
    assert q["has_tissue_pixels"] and q["he_colours"] and q["has_texture"]
