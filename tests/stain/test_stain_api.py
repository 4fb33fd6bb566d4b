"""The public API of breastpath.stain: registry, input/output forms, save/load, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stain_support import HE, angles_deg, synthetic_tiles

from breastpath.errors import BreastpathError, InvalidImageError, StainError
from breastpath.stain import (
    MacenkoNormalizer,
    ReinhardNormalizer,
    StainNormalizer,
    VahadaneNormalizer,
    available_normalizers,
    extract_stain_matrix,
    get_normalizer,
    normalizer_from_dict,
)

METHODS = ("reinhard", "macenko", "vahadane")


def test_registry_names_and_classes():
    assert available_normalizers() == ["macenko", "reinhard", "vahadane"]
    assert isinstance(get_normalizer("reinhard"), ReinhardNormalizer)
    assert isinstance(get_normalizer(" Macenko "), MacenkoNormalizer)
    assert isinstance(get_normalizer("VAHADANE", seed=3), VahadaneNormalizer)
    assert get_normalizer("vahadane", seed=3).seed == 3


def test_unknown_name_is_a_named_error_listing_the_choices():
    with pytest.raises(StainError) as info:
        get_normalizer("ruifrok")
    message = str(info.value)
    assert "ruifrok" in message
    for name in METHODS:
        assert name in message
    assert isinstance(info.value, BreastpathError) and isinstance(info.value, ValueError)
    with pytest.raises(StainError, match="macenko"):
        extract_stain_matrix(np.zeros((4, 4, 3), np.uint8), method="reinhard")


def test_options_are_keyword_only_and_validated():
    with pytest.raises(TypeError):
        VahadaneNormalizer(0.1)  # type: ignore[misc]
    with pytest.raises(TypeError):
        get_normalizer("macenko", not_an_option=1)
    with pytest.raises(StainError):
        get_normalizer("vahadane", percentile=0)
    with pytest.raises(StainError):
        get_normalizer("reinhard", luminosity_threshold=1.5)
    with pytest.raises(StainError):
        get_normalizer("macenko", luminosity_threshold=0.8, background_luminosity=0.5)


@pytest.mark.parametrize("method", METHODS)
def test_transform_keeps_type_shape_and_dtype(method):
    tiles = synthetic_tiles()
    normalizer = get_normalizer(method).fit(tiles["target"])
    one = tiles["source"]
    batch = tiles["batch"]

    out = normalizer.transform(one)
    assert isinstance(out, np.ndarray) and out.shape == one.shape and out.dtype == np.uint8
    assert not np.array_equal(out, one)

    out = normalizer.transform(batch)
    assert out.shape == batch.shape and out.dtype == np.uint8

    tensor = normalizer.transform(torch.from_numpy(batch))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8
    assert tuple(tensor.shape) == batch.shape and tensor.device.type == "cpu"
    np.testing.assert_array_equal(tensor.numpy(), out)

    listed = normalizer.transform([one, batch[0]])
    assert isinstance(listed, list) and [a.shape for a in listed] == [one.shape, batch[0].shape]
    np.testing.assert_array_equal(normalizer(one), normalizer.transform(one))


def test_transform_returns_status():
    tiles = synthetic_tiles()
    normalizer = get_normalizer("vahadane").fit(tiles["target"])
    out, ok = normalizer.transform(tiles["source"], return_status=True)
    assert ok is True and out.shape == tiles["source"].shape
    _, ok = normalizer.transform(tiles["batch"], return_status=True)
    assert ok.dtype == bool and ok.shape == (5,) and ok.all()


def test_fit_accepts_an_image_a_batch_or_a_list():
    tiles = synthetic_tiles()
    batch = tiles["batch"]
    single = get_normalizer("macenko").fit(batch[0])
    pooled = get_normalizer("macenko").fit(batch)
    listed = get_normalizer("macenko").fit([batch[0], tiles["target"]])
    for n in (single, pooled, listed):
        assert n.stain_matrix.shape == (2, 3) and n.max_concentrations.shape == (2,)
    assert get_normalizer("reinhard").fit(list(batch)).lab_mean.shape == (3,)


@pytest.mark.parametrize("method", METHODS)
def test_to_dict_from_dict_roundtrip_gives_identical_transforms(method):
    tiles = synthetic_tiles()
    normalizer = get_normalizer(method, seed=5) if method != "reinhard" else get_normalizer(method)
    normalizer.fit(tiles["target"])
    saved = json.loads(json.dumps(normalizer.to_dict()))  # through real JSON
    assert saved["method"] == method and saved["format"] == "breastpath.stain"
    loaded = StainNormalizer.from_dict(saved)
    assert type(loaded) is type(normalizer) and loaded.get_options() == normalizer.get_options()
    np.testing.assert_array_equal(
        loaded.transform(tiles["batch"]), normalizer.transform(tiles["batch"])
    )
    again = type(normalizer).from_dict(saved)
    np.testing.assert_array_equal(
        again.transform(tiles["source"]), normalizer.transform(tiles["source"])
    )
    assert normalizer_from_dict(saved).to_dict() == saved


def test_stain_target_is_json_with_the_stain_matrix():
    tiles = synthetic_tiles()
    saved = get_normalizer("vahadane").fit(tiles["target"]).to_dict()
    stains = np.array(saved["target"]["stain_matrix"])
    assert stains.shape == (2, 3)
    assert angles_deg(stains, HE).max() < 5.0
    assert len(saved["target"]["max_concentrations"]) == 2
    assert "device" not in saved["options"]


def test_from_dict_rejects_bad_descriptions():
    tiles = synthetic_tiles()
    saved = get_normalizer("macenko").fit(tiles["target"]).to_dict()
    bad_matrix = {**saved, "target": {**saved["target"], "stain_matrix": [[1, 2], [3, 4]]}}
    nan_conc = {**saved, "target": {**saved["target"], "max_concentrations": [float("nan"), 1]}}
    for bad in (
        {},
        {**saved, "format": "other"},
        {**saved, "version": 99},
        {**saved, "method": "unknown"},
        {**saved, "options": {"bogus": 1}},
        bad_matrix,
        nan_conc,
    ):
        with pytest.raises(StainError):
            StainNormalizer.from_dict(bad)
    with pytest.raises(StainError, match="not 'vahadane'"):
        VahadaneNormalizer.from_dict(saved)


def test_errors_before_fit_and_on_bad_input():
    tiles = synthetic_tiles()
    with pytest.raises(StainError, match="fit"):
        get_normalizer("vahadane").transform(tiles["source"])
    with pytest.raises(StainError):
        get_normalizer("reinhard").to_dict()
    normalizer = get_normalizer("reinhard").fit(tiles["target"])
    for bad in (
        tiles["source"].astype(np.float32),
        tiles["source"][..., :2],
        tiles["source"][..., 0],
        torch.zeros((3, 8, 8), dtype=torch.uint8),
        torch.zeros((8, 8, 3), dtype=torch.float32),
        np.zeros((0, 8, 3), np.uint8),
        "image.png",
    ):
        with pytest.raises(InvalidImageError):
            normalizer.transform(bad)
    with pytest.raises(StainError):
        get_normalizer("vahadane").fit([])


@pytest.mark.parametrize("method", ("vahadane", "macenko"))
def test_extract_stain_matrix_shape_order_and_norm(method):
    tiles = synthetic_tiles()
    stains = extract_stain_matrix(tiles["target"], method=method)
    assert stains.shape == (2, 3) and stains.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(stains, axis=1), 1.0, atol=1e-6)
    assert angles_deg(stains, HE).max() < 5.0  # H first, then E
    batch = extract_stain_matrix(tiles["batch"], method=method)
    assert batch.shape == (5, 2, 3)
    fitted = get_normalizer(method).fit(tiles["target"])
    np.testing.assert_allclose(fitted.stain_matrix, stains, atol=1e-6)


def test_extract_stain_matrix_refuses_blank_images():
    with pytest.raises(StainError, match="too little tissue"):
        extract_stain_matrix(np.full((32, 32, 3), 255, np.uint8))
