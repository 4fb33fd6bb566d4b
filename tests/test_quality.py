"""The input-quality gate: what is not H&E tissue gets no cancer label, at every entry point."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from breastpath.errors import InvalidImageError
from breastpath.inference import quality
from conftest import save_png, synthetic_patch


def _non_tissue() -> dict[str, tuple[np.ndarray, str]]:
    """The inputs the bundled models used to label, with the reason the gate must give."""
    from skimage import data as skdata

    rng = np.random.default_rng(0)
    return {
        "glass": (np.full((50, 50, 3), (241, 235, 238), np.uint8), quality.REASON_BACKGROUND),
        "black": (np.zeros((50, 50, 3), np.uint8), quality.REASON_DARK),
        "white": (np.full((50, 50, 3), 255, np.uint8), quality.REASON_BACKGROUND),
        "noise": (rng.integers(0, 256, (50, 50, 3), dtype=np.uint8), quality.REASON_NOT_HE),
        "cat": (skdata.chelsea(), quality.REASON_NOT_HE),
        "astronaut": (skdata.astronaut(), quality.REASON_NOT_HE),
    }


NON_TISSUE = list(_non_tissue())


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _he_patches(count: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [synthetic_patch(rng, i % 2) for i in range(count)]


# -- the gate on its own -----------------------------------------------------------------------


@pytest.mark.parametrize("name", NON_TISSUE)
def test_non_tissue_inputs_are_flagged_with_their_reason(name):
    image, reason = _non_tissue()[name]
    verdict = quality.assess([image])[0]
    assert not verdict.assessed
    assert verdict.reason == reason
    assert verdict.is_tissue == (reason == quality.REASON_NOT_HE)
    assert not verdict.looks_like_he


def test_he_like_patches_pass():
    verdicts = quality.assess(_he_patches())
    assert [q.reason for q in verdicts] == [quality.REASON_OK] * 6
    assert all(q.is_tissue and q.looks_like_he and q.tissue_fraction > 0.5 for q in verdicts)


def test_a_batch_of_tiles_gets_the_verdicts_of_the_images_one_by_one():
    images = [*_he_patches(4), *(_non_tissue()[k][0] for k in ("glass", "black", "noise"))]
    batch = quality.assess(np.stack(images))
    assert batch == [quality.assess([image])[0] for image in images]


def test_the_colour_table_path_gives_the_same_verdicts(monkeypatch):
    images = np.stack([*_he_patches(4), *(_non_tissue()[k][0] for k in ("glass", "noise"))])
    direct = quality.assess(images)
    monkeypatch.setattr(quality, "TABLE_PIXELS", 0)  # large batches use the per-colour table
    assert quality.assess(images) == direct


def test_a_large_image_is_assessed_on_a_subsample_with_the_same_verdict():
    tile = _he_patches(1)[0]
    large = tile.repeat(20, 0).repeat(20, 1)  # 1000 x 1000: the patch seen at 20x
    small = quality.assess([large], max_pixels=10_000)[0]
    assert small.reason == quality.REASON_OK
    assert small.tissue_fraction == pytest.approx(quality.assess([large])[0].tissue_fraction, 0.05)


def test_thresholds_are_keyword_options():
    glass = _non_tissue()["glass"][0]
    # glass is luminosity 0.94: tissue when the tissue ceiling is raised above it
    assert quality.assess([glass], max_luminosity=0.95)[0].is_tissue
    noise = _non_tissue()["noise"][0]
    assert quality.assess([noise], max_foreign_fraction=1.0)[0].looks_like_he
    with pytest.raises(InvalidImageError, match="unknown quality threshold"):
        quality.assess([glass], min_tissue=0.1)


def test_bad_and_empty_inputs():
    with pytest.raises(InvalidImageError):
        quality.assess([np.zeros((5, 5), np.uint8)])
    with pytest.raises(InvalidImageError):
        quality.assess([np.zeros((5, 5, 3), np.float32)])
    empty = quality.assess([np.zeros((0, 7, 3), np.uint8)])[0]
    assert empty.reason == quality.REASON_EMPTY and not empty.assessed


def test_quality_dict_has_the_documented_fields():
    verdict = quality.assess([_non_tissue()["glass"][0]])[0].to_dict()
    assert {"tissue_fraction", "is_tissue", "looks_like_he", "reason"} <= set(verdict)


# -- texture: flat fields and pixel noise are not tissue (issue 29, defect 5) -------------------


def _textureless(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Inputs in H&E-range colours (or neutral grey) that passed the gate before it knew
    texture: flat fields, near-flat fields, noise, downscaled noise."""
    rng = np.random.default_rng(29)
    colours = {
        "grey 90": (90, 90, 90),
        "grey 128": (128, 128, 128),
        "grey 180": (180, 180, 180),
        "haematoxylin": (95, 70, 150),
        "eosin": (230, 140, 190),
        "pale pink": (240, 200, 220),
    }
    out = {}
    for name, colour in colours.items():
        flat = np.full((*shape, 3), colour, np.float64)
        out[f"flat {name}"] = flat.astype(np.uint8)
        out[f"near-flat {name}"] = np.clip(flat + rng.normal(0, 2, flat.shape), 0, 255)
        ramp = np.linspace(-12, 12, shape[1])[None, :, None]
        out[f"smooth ramp {name}"] = np.clip(flat + ramp, 0, 255)
    palette = np.array([(95, 70, 150), (230, 140, 190), (240, 200, 220), (150, 90, 170)])
    out["pink-purple noise"] = palette[rng.integers(0, 4, shape)]
    out["pink noise"] = np.clip(np.array((200, 130, 180)) + rng.normal(0, 30, (*shape, 3)), 0, 255)
    big = rng.integers(0, 256, (shape[0] * 8, shape[1] * 8, 3), dtype=np.uint8)
    out["uniform noise, downscaled"] = np.asarray(Image.fromarray(big).resize(shape[::-1]))
    return {k: np.asarray(v).astype(np.uint8) for k, v in out.items()}


@pytest.mark.parametrize("shape", [(50, 50), (460, 700), (224, 224)])
def test_flat_fields_and_noise_are_not_assessed_for_lack_of_texture(shape):
    images = _textureless(shape)
    verdicts = dict(zip(images, quality.assess(list(images.values())), strict=True))
    passed = [name for name, q in verdicts.items() if q.assessed]
    assert passed == []
    texture = {name for name, q in verdicts.items() if q.reason == quality.REASON_NO_TEXTURE}
    assert {n for n in images if n.startswith(("flat", "near-flat", "smooth"))} <= texture
    assert all(not verdicts[n].has_texture for n in texture)


def test_texture_is_measured_the_same_on_a_batch_and_one_by_one():
    images = [*_he_patches(3), *list(_textureless((50, 50)).values())[:5]]
    assert quality.assess(np.stack(images)) == [quality.assess([im])[0] for im in images]


def test_texture_thresholds_are_keyword_options():
    pink = _textureless((50, 50))["pink-purple noise"]
    assert quality.assess([pink])[0].reason == quality.REASON_NO_TEXTURE
    assert quality.assess([pink], min_structure=-1.0)[0].assessed


def test_a_tissue_photo_is_not_flat():
    from skimage import data as skdata

    he = skdata.immunohistochemistry()  # not H&E (DAB), but real tissue texture
    q = quality.assess([he])[0]
    assert q.has_texture and q.structure > 0.5 and q.reason == quality.REASON_NOT_HE


@pytest.mark.data
def test_real_breakhis_images_pass_the_texture_rule_at_coarser_strides(shared_data):
    images = _pngs(shared_data / "breakhis")
    for step in (2, 4, 8):  # as a larger image of the same field would be subsampled
        strided = [np.ascontiguousarray(im[::step, ::step]) for im in images]
        assert all(q.has_texture for q in quality.assess(strided)), step


# -- through the Predictor, the CLI and the API ------------------------------------------------


@pytest.mark.parametrize("name", NON_TISSUE)
def test_predictor_gives_no_label_to_non_tissue(predictor, name):
    image, reason = _non_tissue()[name]
    prediction = predictor.predict_images([image])[0]
    assert prediction.label is None and prediction.is_cancer is None
    assert not prediction.assessed
    assert prediction.quality["reason"] == reason
    assert prediction.to_dict()["assessed"] is False


def test_predictor_escape_hatch_labels_and_marks_forced(predictor):
    glass = _non_tissue()["glass"][0]
    forced = predictor.predict_images([glass], allow_non_tissue=True)[0]
    assert forced.label in predictor.class_names and forced.is_cancer in (True, False)
    assert forced.forced and forced.to_dict()["forced"] is True and not forced.assessed
    assert forced.quality["reason"] == quality.REASON_BACKGROUND
    plain = predictor.predict_images([glass])[0]
    assert plain.probability == pytest.approx(forced.probability)


def test_predictor_labels_tissue_as_before(predictor):
    for prediction in predictor.predict_images(_he_patches()):
        assert prediction.assessed and not prediction.forced
        assert prediction.label in predictor.class_names
        assert prediction.is_cancer == (prediction.probability >= predictor.threshold)


def test_predict_sources_flags_files(predictor, tmp_path):
    files = [save_png(tmp_path / "glass.png", _non_tissue()["glass"][0])]
    files.append(save_png(tmp_path / "patch.png", _he_patches(1)[0]))
    glass, patch = predictor.predict_sources(files)
    assert glass.label is None and patch.label is not None
    assert predictor.predict_sources(files, allow_non_tissue=True)[0].label is not None


def _cli_rows(capsys, *argv: str) -> list[dict[str, str]]:
    from breastpath.cli.main import main

    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def test_cli_csv_leaves_the_label_of_non_tissue_empty(capsys, tmp_path):
    for name, (image, _) in _non_tissue().items():
        save_png(tmp_path / f"{name}.png", image)
    save_png(tmp_path / "zz_patch.png", _he_patches(1)[0])
    rows = {
        Path(r["path"]).stem: r
        for r in _cli_rows(capsys, "predict", "--checkpoint", "default", tmp_path)
    }
    for name, (_, reason) in _non_tissue().items():
        row = rows[name]
        assert row["assessed"] == "0" and row["label"] == "" and row["reason"] == reason, row
        assert row["error"] == "" and row["probability"] != ""
    patch = rows["zz_patch"]
    assert patch["assessed"] == "1" and patch["label"] in ("non-IDC", "IDC", "0", "1"), patch
    assert patch["reason"] == quality.REASON_OK and patch["looks_like_he"] == "1"
    forced = {
        Path(r["path"]).stem: r
        for r in _cli_rows(
            capsys, "predict", "--checkpoint", "default", tmp_path, "--allow-non-tissue"
        )
    }
    glass = forced["glass"]
    assert glass["label"] != "" and glass["assessed"] == "0"
    assert glass["reason"].startswith("forced:")


@pytest.mark.parametrize("name", NON_TISSUE)
def test_api_result_has_quality_and_no_label_for_non_tissue(client, name):
    image, reason = _non_tissue()[name]
    files = {"file": (f"{name}.png", _png(image), "image/png")}
    response = client.post("/api/predict", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] is None and body["is_cancer"] is None and body["assessed"] is False
    assert body["quality"]["reason"] == reason
    if body["tiles"] is not None:
        assert body["tiles"]["is_cancer"] is None


def test_api_force_is_an_explicit_research_override(client):
    glass = _png(_non_tissue()["glass"][0])
    body = client.post(
        "/api/predict", params={"force": "true"}, files={"file": ("g.png", glass, "image/png")}
    ).json()
    assert body["label"] is not None and body["forced"] is True and body["assessed"] is False
    assert body["quality"]["reason"] == quality.REASON_BACKGROUND
    spec = client.get("/openapi.json").json()
    params = spec["paths"]["/api/predict"]["post"]["parameters"]
    force = next(p for p in params if p["name"] == "force")
    assert "RESEARCH ONLY" in force["description"]


def test_api_batch_results_carry_quality(client):
    files = [
        ("files", ("glass.png", _png(_non_tissue()["glass"][0]), "image/png")),
        ("files", ("patch.png", _png(_he_patches(1)[0]), "image/png")),
    ]
    body = client.post("/api/predict/batch", files=files).json()
    glass, patch = body["results"]
    assert glass["label"] is None and glass["quality"]["reason"] == quality.REASON_BACKGROUND
    assert patch["label"] is not None and patch["quality"]["reason"] == quality.REASON_OK
    assert body["summary"]["not_assessed"] == 1
    forced = client.post("/api/predict/batch?force=true", files=files).json()
    glass, patch = forced["results"]
    assert glass["label"] is not None and glass["forced"] is True and glass["assessed"] is False
    assert forced["summary"]["not_assessed"] == 1  # forced results stay not assessed


def test_tile_map_skips_tiles_the_gate_flags(client):
    image = np.tile(_he_patches(1)[0], (2, 2, 1))  # 100 x 100: four tiles
    image[:50, :50] = 0  # one black tile
    body = client.post("/api/predict", files={"file": ("t.png", _png(image), "image/png")}).json()
    assert body["assessed"] is True
    assert body["tiles"]["assessed"] == [[False, True], [True, True]]
    assert body["tiles"]["skipped"][0][0] == "dark"


# -- real images (../shared/data) ------------------------------------------------------------


def _pngs(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.rglob("*.png"))]


@pytest.mark.data
def test_real_breakhis_images_and_tiles_all_pass(shared_data):
    for folder in ("breakhis", "breakhis-tiles"):
        images = _pngs(shared_data / folder)
        assert images, folder
        flagged = [q for q in quality.assess(images) if not q.assessed]
        assert flagged == [], folder


@pytest.mark.data
def test_real_idc_patches_pass_but_ink_and_black_frames(shared_data):
    images = _pngs(shared_data / "idc")
    verdicts = quality.assess(images)
    flagged = [q for q in verdicts if not q.assessed]
    # measured with scripts/calibrate_quality.py: patches mostly covered by marking ink or a
    # black frame, and 9 whose texture is indistinguishable from pixel noise (see
    # docs/reliability.md); nothing is rejected as background
    assert len(flagged) <= 0.005 * len(images), len(flagged)
    assert all(q.reason in (quality.REASON_NOT_HE, quality.REASON_NO_TEXTURE) for q in flagged)
    no_texture = [q for q in flagged if q.reason == quality.REASON_NO_TEXTURE]
    assert len(no_texture) <= 0.002 * len(images), len(no_texture)


@pytest.mark.data
def test_dapi_fluorescence_tiles_are_all_flagged(shared_data):
    pytest.importorskip("imagecodecs", reason="decoding NDPI JPEG needs imagecodecs")
    from breastpath.slide.reader import open_slide

    with open_slide(shared_data / "wsi" / "test3-DAPI-2-387.ndpi") as reader:
        level = reader.read_level(len(reader.levels) - 2)
    height, width = level.shape[0] // 50 * 50, level.shape[1] // 50 * 50
    tiles = level[:height, :width].reshape(height // 50, 50, width // 50, 50, 3)
    tiles = tiles.swapaxes(1, 2).reshape(-1, 50, 50, 3)
    assert not any(q.assessed for q in quality.assess(tiles))


def test_any_rgb_image_gets_a_verdict_never_an_exception():
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    reasons = set(quality.REASONS)
    shapes = st.tuples(st.integers(0, 40), st.integers(0, 40), st.just(3))

    @settings(max_examples=60, deadline=None)
    @given(arrays(np.uint8, shapes))
    def check(image):
        verdict = quality.assess([image])[0]
        assert verdict.reason in reasons
        assert 0.0 <= verdict.tissue_fraction <= 1.0
        assert 0.0 <= verdict.foreign_fraction <= 1.0
        assert verdict.assessed == (verdict.reason == quality.REASON_OK)

    check()


@pytest.mark.data
def test_tissue_tiles_of_the_real_h_and_e_slide_all_pass(shared_data):
    pytest.importorskip("imagecodecs", reason="decoding SVS JPEG tiles needs imagecodecs")
    from breastpath.slide.reader import open_slide
    from breastpath.slide.tissue import tissue_mask

    with open_slide(shared_data / "wsi" / "CMU-1-Small-Region.svs") as reader:
        level = reader.read_level(0)
    mask, _ = tissue_mask(np.ascontiguousarray(level[::8, ::8]))
    size = 224
    tiles = [
        level[y : y + size, x : x + size]
        for y in range(0, level.shape[0] - size + 1, size)
        for x in range(0, level.shape[1] - size + 1, size)
        if mask[y // 8 : (y + size) // 8, x // 8 : (x + size) // 8].mean() >= 0.5
    ]
    assert len(tiles) > 20
    assert [q.reason for q in quality.assess(np.stack(tiles))] == [quality.REASON_OK] * len(tiles)
