"""Properties of the normalizers: what normalization does, backends, determinism, edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from stain_support import HE, HE_OTHER, angles_deg, mad, synthetic_tiles

from breastpath.errors import StainError
from breastpath.stain import StainNormalizer, StainWarning, extract_stain_matrix, get_normalizer
from breastpath.stain._backend import NumpyOps
from breastpath.stain._coding import RUIFROK_HE, lstsq2, nn_lasso2
from breastpath.stain._ops import luminance, luminance_threshold

METHODS = ("reinhard", "macenko", "vahadane")
NP = NumpyOps()


# --------------------------------------------------------------------------- what it does
@pytest.mark.parametrize("method", METHODS)
def test_normalizing_a_tile_to_itself_changes_little(method):
    tiles = synthetic_tiles()
    target, source = tiles["target"], tiles["source"]
    normalizer = get_normalizer(method).fit(target)
    itself = mad(normalizer.transform(target), target)
    other = mad(normalizer.transform(source), source)
    assert itself < 2.0  # the two-stain model explains these tiles up to noise
    assert other > 5 * itself  # ...while a different stain appearance does change


@pytest.mark.parametrize("method", ("vahadane", "macenko"))
def test_normalized_stains_match_the_target(method):
    tiles = synthetic_tiles()
    normalizer = get_normalizer(method).fit(tiles["target"])
    source = tiles["source"]
    before = angles_deg(extract_stain_matrix(source, method=method), normalizer.stain_matrix)
    after = angles_deg(
        extract_stain_matrix(normalizer.transform(source), method=method), normalizer.stain_matrix
    )
    assert before.min() > 8.0
    assert after.max() < 4.0
    refit = get_normalizer(method).fit(normalizer.transform(source))
    np.testing.assert_allclose(refit.max_concentrations, normalizer.max_concentrations, rtol=0.15)


def test_reinhard_matches_target_lab_statistics():
    tiles = synthetic_tiles()
    normalizer = get_normalizer("reinhard", preserve_background=False)
    normalizer.fit(tiles["target"])
    refit = get_normalizer("reinhard", preserve_background=False)
    refit.fit(normalizer.transform(tiles["source"]))
    np.testing.assert_allclose(refit.lab_mean, normalizer.lab_mean, atol=1.0)
    np.testing.assert_allclose(refit.lab_std, normalizer.lab_std, rtol=0.08, atol=0.5)


@pytest.mark.parametrize("method", METHODS)
def test_white_background_is_left_as_it_is(method):
    tiles = synthetic_tiles()
    tile = tiles["source"].copy()
    tile[:20] = 255  # glass
    tile[20:30, :, :] = (246, 244, 247)  # near-white
    normalizer = get_normalizer(method).fit(tiles["target"])
    out = normalizer.transform(tile)
    np.testing.assert_array_equal(out[:30], tile[:30])
    light = luminance(NP, tile.reshape(1, -1, 3))[0] >= luminance_threshold(0.95)
    np.testing.assert_array_equal(out.reshape(-1, 3)[light], tile.reshape(-1, 3)[light])
    assert not np.array_equal(out[30:], tile[30:])


def test_range_of_output_values():
    tiles = synthetic_tiles()
    dark = (tiles["source"] // 3).astype(np.uint8)  # saturates when rescaled
    for method in METHODS:
        out = get_normalizer(method).fit(tiles["target"]).transform(dark)
        assert out.dtype == np.uint8 and out.min() >= 0 and out.max() <= 255
        assert len(np.unique(out)) > 50


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize("method", METHODS)
def test_numpy_and_torch_backends_agree(method):
    tiles = synthetic_tiles()
    target, batch = tiles["target"], tiles["batch"]
    ours = get_normalizer(method).fit(target)
    theirs = get_normalizer(method, device="cpu").fit(torch.from_numpy(target))
    if method != "reinhard":
        np.testing.assert_allclose(theirs.stain_matrix, ours.stain_matrix, atol=1e-5)
        np.testing.assert_allclose(theirs.max_concentrations, ours.max_concentrations, rtol=1e-4)
    a = ours.transform(batch)
    b = theirs.transform(torch.from_numpy(batch))
    assert isinstance(b, torch.Tensor)
    diff = np.abs(a.astype(int) - b.numpy().astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float rounding only
    # numpy input through torch on the CPU (the target loaded from ours), returned as numpy
    on_torch = StainNormalizer.from_dict(ours.to_dict(), device="cpu").transform(batch)
    assert isinstance(on_torch, np.ndarray)
    assert np.abs(on_torch.astype(int) - a.astype(int)).max() <= 1


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("method", ("vahadane", "macenko"))
def test_deterministic_for_a_seed(method):
    tiles = synthetic_tiles()
    tile = tiles["source"]  # 9216 pixels > n_samples: the sample matters
    first = get_normalizer(method, seed=11).fit(tile)
    again = get_normalizer(method, seed=11).fit(tile)
    other = get_normalizer(method, seed=12).fit(tile)
    np.testing.assert_array_equal(first.stain_matrix, again.stain_matrix)
    np.testing.assert_array_equal(first.transform(tile), again.transform(tile))
    assert not np.array_equal(first.stain_matrix, other.stain_matrix)
    assert angles_deg(first.stain_matrix, other.stain_matrix).max() < 1.5


@pytest.mark.parametrize("method", METHODS)
def test_an_image_gives_the_same_result_alone_or_in_a_batch(method):
    tiles = synthetic_tiles()
    normalizer = get_normalizer(method).fit(tiles["target"])
    batch = tiles["batch"]
    together = normalizer.transform(batch)
    for i in (0, 3):
        np.testing.assert_array_equal(together[i], normalizer.transform(batch[i]))
    np.testing.assert_array_equal(normalizer.transform(batch[::-1])[::-1], together)


# --------------------------------------------------------------------------- edge cases
EDGE_CASES = {
    "white": np.full((32, 32, 3), 255, np.uint8),
    "near-white": np.full((16, 16, 3), 240, np.uint8),
    "single-colour": np.full((40, 40, 3), (170, 90, 160), np.uint8),
    "black": np.zeros((8, 8, 3), np.uint8),
    "1x1": np.array([[[150, 60, 140]]], np.uint8),
    "2x2": np.array(
        [[[150, 60, 140], [90, 40, 120]], [[255, 255, 255], [200, 120, 190]]], np.uint8
    ),
    "1-row": np.full((1, 40, 3), (120, 60, 130), np.uint8),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_degenerate_tiles_come_back_unchanged_with_a_warning(method, case):
    tiles = synthetic_tiles()
    normalizer = get_normalizer(method).fit(tiles["target"])
    tile = EDGE_CASES[case]
    with pytest.warns(StainWarning, match="left unchanged"):
        out, ok = normalizer.transform(tile, return_status=True)
    assert ok is False
    np.testing.assert_array_equal(out, tile)
    with pytest.warns(StainWarning):
        tensor_out = normalizer.transform(torch.from_numpy(tile))
    np.testing.assert_array_equal(tensor_out.numpy(), tile)


@pytest.mark.parametrize("method", METHODS)
def test_a_blank_tile_in_a_batch_only_skips_that_tile(method):
    tiles = synthetic_tiles()
    normalizer = get_normalizer(method).fit(tiles["target"])
    batch = tiles["batch"].copy()
    batch[2] = 255
    with pytest.warns(StainWarning, match="1 of 5"):
        out, ok = normalizer.transform(batch, return_status=True)
    assert ok.tolist() == [True, True, False, True, True]
    np.testing.assert_array_equal(out[2], batch[2])
    np.testing.assert_array_equal(out[[0, 1, 3, 4]], normalizer.transform(batch[[0, 1, 3, 4]]))


def test_empty_batch_and_no_warning_for_good_tiles():
    tiles = synthetic_tiles()
    normalizer = get_normalizer("vahadane").fit(tiles["target"])
    empty = np.zeros((0, 8, 8, 3), np.uint8)
    assert normalizer.transform(empty).shape == (0, 8, 8, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalizer.transform(tiles["batch"])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", ("white", "single-colour", "1x1"))
def test_fitting_a_target_without_usable_tissue_is_an_error(method, case):
    with pytest.raises(StainError, match="tissue"):
        get_normalizer(method).fit(EDGE_CASES[case])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image=arrays(
        np.uint8,
        st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3)),
        elements=st.sampled_from([0, 30, 90, 128, 170, 200, 230, 250, 255]),
    )
)
def test_fuzz_any_small_image_is_handled(image):
    rng = np.random.default_rng(0)
    target = np.clip(rng.normal((180, 110, 170), 30, (48, 48, 3)), 0, 255).astype(np.uint8)
    for method in METHODS:
        normalizer = get_normalizer(method).fit(target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StainWarning)
            out, ok = normalizer.transform(image, return_status=True)
        assert out.shape == image.shape and out.dtype == np.uint8
        if not ok:
            np.testing.assert_array_equal(out, image)


# --------------------------------------------------------------------------- solvers
def test_closed_form_concentrations_solve_the_non_negative_lasso():
    from scipy.optimize import minimize

    rng = np.random.default_rng(3)
    signed = rng.normal(size=(2, 2, 3))  # any dictionary, also with negative entries
    signed /= np.linalg.norm(signed, axis=2, keepdims=True)
    stains = np.concatenate([np.stack([HE, RUIFROK_HE, HE_OTHER]), signed])
    stains = stains.astype(np.float32)
    od = (rng.random((5, 3, 16)) * 1.5 - 0.2).astype(np.float32)  # includes negative OD
    for lam in (0.0, 0.01, 0.1):
        ours = nn_lasso2(NP, stains, od, lam)
        assert ours.min() >= 0.0
        for n in range(5):
            d = stains[n].astype(np.float64)
            for m in range(od.shape[2]):
                x = od[n, :, m].astype(np.float64)

                def objective(c, d=d, x=x, lam=lam):
                    return 0.5 * np.sum((x - c @ d) ** 2) + lam * c.sum()

                best = minimize(objective, np.full(2, 0.1), bounds=[(0, None)] * 2, tol=1e-12)
                assert objective(ours[n, :, m].astype(np.float64)) <= best.fun + 1e-5
    ls = lstsq2(NP, stains, od)
    expected = np.stack(
        [np.linalg.lstsq(s.T, o, rcond=None)[0] for s, o in zip(stains, od, strict=True)]
    )
    np.testing.assert_allclose(ls, expected, atol=1e-4)


def test_dictionary_learning_recovers_sparse_non_negative_stains():
    from breastpath.stain.vahadane import learn_stain_matrix

    rng = np.random.default_rng(5)
    truth = np.stack([HE, HE_OTHER])
    conc = rng.exponential(0.5, (2, 4000, 2)) * (rng.random((2, 4000, 2)) < 0.5)
    od = np.einsum("nmk,nkc->ncm", conc, truth).astype(np.float32)
    valid = np.ones((2, 4000), bool)
    valid[1, 3000:] = False  # padding is ignored
    od[1, :, 3000:] = 9.0
    found = learn_stain_matrix(NP, od, valid)
    assert found.min() >= 0.0
    np.testing.assert_allclose(np.linalg.norm(found, axis=2), 1.0, atol=1e-5)
    assert angles_deg(found, truth).max() < 2.0
