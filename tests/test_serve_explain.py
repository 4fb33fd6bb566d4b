"""``?explain=true``: Grad-CAM overlay, tile map for large images, stain view (or why not)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastpath.imaging import decode_image
from breastpath.inference.tiles import cut_tiles
from breastpath.serve.app import ServeLimits, create_app
from breastpath.serve.explain import resolve_stain
from conftest import synthetic_patch


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _picture(b64: str) -> Image.Image:
    data = base64.b64decode(b64, validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


def _tissue(size, seed=0, label=1) -> np.ndarray:
    return synthetic_patch(np.random.default_rng(seed), label, size=size)


def _explain(client, data: bytes, name: str = "patch.png"):
    response = client.post("/api/predict?explain=true", files={"file": (name, data, "image/png")})
    assert response.status_code == 200, response.text
    return response.json()


def test_patch_explanation(client, predictor):
    body = _explain(client, _png(_tissue((50, 50))))
    assert body["tiles"] is None and body["preprocessing"] == "none"
    explain = body["explain"]
    assert explain["method"] == "grad-cam"
    assert explain["target_class"] == predictor.class_names[-1]  # the cancer class
    assert explain["explains"] == "the image"
    for key in ("input_png", "gradcam_png"):
        picture = _picture(explain[key])
        assert picture.size == (250, 250) and picture.mode == "RGB"  # 50x50 shown 5x
    assert explain["tiles_png"] is None
    stain = explain["stain"]
    assert stain["available"] is False and stain["png"] is None
    assert stain["note"].startswith("this checkpoint carries no fitted stain normalizer")
    assert set(body["timing"]) == {"decode", "model", "explain"}


def test_no_explanation_unless_asked(client):
    body = client.post("/api/predict", files={"file": ("p.png", _png(_tissue((50, 50))))}).json()
    assert "explain" not in body
    assert "explain" not in body["timing"]


@pytest.mark.parametrize("seed", [3, 4])
def test_overlay_shows_the_evidence(client, seed):
    explain = _explain(client, _png(_tissue((50, 50), seed=seed)))["explain"]
    raw = np.asarray(_picture(explain["input_png"]), dtype=np.int16)
    overlay = np.asarray(_picture(explain["gradcam_png"]), dtype=np.int16)
    # an overlay shows where the evidence is; without any, it says so and leaves the image be
    assert (np.abs(raw - overlay).max() > 0) == explain["evidence"]
    assert (explain["note"] is None) == explain["evidence"]


def test_edge_patch_is_padded_and_explained_on_itself(client):
    body = _explain(client, _png(_tissue((37, 50))))
    assert body["preprocessing"] == "padded" and body["tiles"] is None
    assert body["image"] == {"width": 50, "height": 37}
    assert _picture(body["explain"]["gradcam_png"]).size == (250, 185)


def test_large_image_is_tiled(client, predictor):
    image = _tissue((120, 160), seed=4)
    image[:, 100:] = 245  # background on the right: those tiles are not tissue
    body = _explain(client, _png(image), name="large.png")
    tiles = body["tiles"]
    assert (tiles["rows"], tiles["cols"], tiles["count"]) == (3, 4, 12)
    assert tiles["tile_size"] == list(predictor.input_size)
    assessed = np.asarray(tiles["assessed"])
    assert assessed[:, :2].all() and not assessed[:, 2:].any()
    assert tiles["assessed_count"] == 6
    grid = cut_tiles(decode_image(_png(image)), predictor.input_size)
    expected = predictor.cancer_probability(predictor.predict_proba(grid.tiles)).reshape(3, 4)
    np.testing.assert_allclose(tiles["probabilities"], expected, atol=1e-5)
    rule = predictor.verdict_rule()
    verdict = rule.apply(expected[:, :2])
    assert tiles["verdict"]["rule"] == rule.describe()
    assert tiles["label"] == verdict.label and tiles["is_cancer"] == verdict.positive
    assert tiles["extent"] == pytest.approx(verdict.extent, abs=1e-6)
    assert tiles["max"] == pytest.approx(expected[:, :2].max(), abs=1e-5)
    explain = body["explain"]
    assert explain["explains"] == "the whole image, tile by tile"
    assert _picture(explain["tiles_png"]).size == (160, 120)
    assert _picture(explain["gradcam_png"]).size == (160, 120)


def test_too_many_tiles_scores_the_whole_image(predictor):
    app = create_app(predictor, limits=ServeLimits(max_tiles=4))
    with TestClient(app, raise_server_exceptions=False) as small:
        body = _explain(small, _png(_tissue((200, 300), seed=5)))
    assert body["tiles"] is None
    assert "24 tiles" in body["note"] and "limit of 4" in body["note"]
    assert body["explain"]["explains"].startswith("the model's input")


def test_stain_view_with_a_normalizer(predictor):
    stain = pytest.importorskip("breastpath.stain")
    target = _tissue((64, 64), seed=7)
    normalizer = stain.get_normalizer("reinhard").fit(target)
    with TestClient(create_app(predictor, stain=normalizer)) as client:
        models = client.get("/api/models").json()
        assert models["explain"]["stain"] is True
        explain = _explain(client, _png(_tissue((50, 50), seed=8, label=0)))["explain"]
    view = explain["stain"]
    assert view["available"] is True and view["method"] == "reinhard"
    assert _picture(view["png"]).size == (250, 250)


def test_stain_normalizer_from_the_checkpoint(predictor):
    stain = pytest.importorskip("breastpath.stain")
    fitted = stain.get_normalizer("macenko").fit(_tissue((64, 64), seed=9))
    meta = predictor.meta
    normalizer, note = resolve_stain(meta.replace(stain=fitted.to_dict()))
    assert normalizer is not None and normalizer.method == "macenko"
    assert "checkpoint" in note
    broken, note = resolve_stain(meta.replace(stain={"format": "breastpath.stain", "version": 99}))
    assert broken is None and "could not be loaded" in note
    none, note = resolve_stain(meta.replace(stain=None))
    assert none is None and "--stain-target" in note


def _is_grey(picture: np.ndarray) -> np.ndarray:
    """Per pixel: no colour (R = G = B)."""
    return (picture.max(axis=2) - picture.min(axis=2)) == 0


def test_tiles_not_assessed_are_grey_in_the_tile_map(client):
    """Issue 32, item 4: the legend's grey is really grey, the assessed tiles coloured."""
    image = _tissue((100, 200), seed=4)
    image[:, 100:] = 245  # glass on the right half: 'background' tiles
    body = _explain(client, _png(image), name="half.png")
    assert np.asarray(body["tiles"]["skipped"])[:, 2:].tolist() == [["background"] * 2] * 2
    picture = np.asarray(_picture(body["explain"]["tiles_png"]).convert("RGB"))
    half = picture.shape[1] // 2
    assert _is_grey(picture[:, half + 2 :]).all()
    assert _is_grey(picture[:, : half - 2]).mean() < 0.1  # the white tile edges only


def test_a_photo_tile_map_is_all_grey(client):
    """An image that fails the quality gate as a whole has no tile scored for its verdict, and
    its tile map shows none coloured, whatever single tile passed the tile check."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(np.random.default_rng(3).random((100, 150)), 2.0)
    t = (field - field.min()) / np.ptp(field)
    leaf, sky = np.array([60, 150, 70]), np.array([70, 130, 200])
    photo = np.round(leaf + t[..., None] * (sky - leaf)).astype(np.uint8)
    body = _explain(client, _png(photo), name="photo.png")
    assert body["label"] is None and body["tiles"]["label"] is None
    picture = np.asarray(_picture(body["explain"]["tiles_png"]).convert("RGB"))
    assert _is_grey(picture).all()
