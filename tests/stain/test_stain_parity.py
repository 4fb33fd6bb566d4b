"""Parity with reference implementations on real H&E tiles from ../shared/data.

* Vahadane vs staintools 2.1 (SPAMS dictionary learning and lasso; the ``stain-ref`` extra).
* Macenko and Reinhard vs torchstain's numpy backend.

Our normalizers leave near-white background alone and take statistics on tissue only; the
references transform and count every pixel. ``preserve_background=False`` turns that off, and is
what the image comparisons use, so that they test the same computation.

Bounds for normalized images, in mean absolute difference (MAD) of uint8 values:

* Vahadane: MAD <= 3. Our Vahadane differs from staintools in small ways that each move pixels by
  about a grey level: OD is ``log(256 / (I + 1))`` instead of ``log(255 / I)``, the output is
  rounded instead of truncated (staintools is 0.5 darker on average), the stain vectors agree to
  about a degree (SPAMS' online learner runs for a fixed time and is itself only reproducible to
  ~0.15 degrees), and stain matrices come from a 4096-pixel sample. Measured: 1.8 to 2.5. The
  bound is also required to be under a fifth of what normalization changes (about 20 to 25
  levels on these tiles), so it cannot pass by doing nothing. The default mode (statistics on
  tissue only) is checked on tissue pixels against a looser bound, under 0.4 of the change
  (measured 3.8 to 6.4 against changes of about 25).
* Macenko and Reinhard: MAD <= 1: the same algorithms; only rounding differs (torchstain
  truncates, and adds 1 to Macenko's inverse OD).
"""

from __future__ import annotations

import numpy as np
import pytest
from stain_support import angles_deg, idc_patches, mad, real_tiles

from breastpath.stain import extract_stain_matrix, get_normalizer
from breastpath.stain._backend import NumpyOps
from breastpath.stain._coding import nn_lasso2
from breastpath.stain._ops import rgb_to_od, tissue_mask

pytestmark = pytest.mark.data

NP = NumpyOps()
#: Tiles used as normalization targets and sources.
TARGET = "SOB_B_TA-14-3411F-40-001"
SOURCES = ("SOB_M_DC-14-2523-40-010", "SOB_B_F-14-9133-40-001", "idc-9323")


@pytest.fixture(scope="module")
def staintools():
    """staintools with its SPAMS dictionary learning made deterministic.

    staintools calls ``spams.trainDL`` with a random initial dictionary and all threads, so two
    fits of one image differ (their outputs by up to ~0.5 grey levels MAD) and a parity bound
    would pass or fail by chance. The reference runs here with a seeded initial dictionary
    (two tissue OD rows drawn by ``default_rng(0)``), batch mode and one thread: the same
    algorithm and objective, one answer.
    """
    spams = pytest.importorskip(
        "spams", reason="install the stain-ref extra (spams-bin) for parity"
    )
    module = pytest.importorskip("staintools", reason="install the stain-ref extra for parity")
    train = spams.trainDL

    def seeded_train(X, **options):
        columns = np.random.default_rng(0).choice(X.shape[1], options["K"], replace=False)
        start = np.asfortranarray(X[:, columns] / np.linalg.norm(X[:, columns], axis=0))
        return train(X, D=start, numThreads=1, batch=True, iter=200, **options)

    spams.trainDL = seeded_train
    yield module
    spams.trainDL = train


@pytest.fixture(scope="module")
def torchstain():
    return pytest.importorskip("torchstain", reason="install the stain-ref extra for parity")


@pytest.fixture(scope="module")
def spams_stains(staintools):
    """staintools' Vahadane stain matrix of every real tile (about a second each)."""
    from staintools.stain_extraction.vahadane_stain_extractor import VahadaneStainExtractor

    real = real_tiles()
    return {name: VahadaneStainExtractor.get_stain_matrix(t.copy()) for name, t in real.items()}


# --------------------------------------------------------------------------- Vahadane
def test_vahadane_stain_vectors_match_staintools(spams_stains):
    real = real_tiles()
    for name, tile in real.items():
        ours = extract_stain_matrix(tile, method="vahadane")
        angles = angles_deg(ours, spams_stains[name])
        assert angles.max() < 5.0, f"{name}: {angles} degrees from staintools"
        assert ours.min() >= 0.0  # both stain vectors non-negative (no sign-flipped eosin)


def test_vahadane_objective_is_as_low_as_spams(spams_stains):
    """On all tissue pixels, our dictionary fits the sparse NMF objective at least as well."""
    real = real_tiles()

    def objective(stains: np.ndarray, od: np.ndarray) -> float:
        d = stains[None].astype(np.float32)
        conc = nn_lasso2(NP, d, od, 0.1)  # exact optimal codes for this dictionary
        residual = od - np.einsum("nkm,nkc->ncm", conc, d)
        return float((0.5 * (residual**2).sum(1) + 0.1 * conc.sum(1)).mean())

    for name, tile in real.items():
        rgb = tile.reshape(1, -1, 3)
        od = rgb_to_od(NP, rgb)[:, :, tissue_mask(NP, rgb, 0.8)[0]]
        ours = extract_stain_matrix(tile, method="vahadane")
        assert objective(ours, od) <= objective(spams_stains[name], od) * 1.001, name


def test_vahadane_normalized_images_match_staintools(staintools):
    real = real_tiles()
    reference = staintools.StainNormalizer("vahadane")
    reference.fit(real[TARGET].copy())
    ours = get_normalizer("vahadane", preserve_background=False).fit(real[TARGET])
    assert angles_deg(ours.stain_matrix, reference.stain_matrix_target).max() < 5.0
    np.testing.assert_allclose(ours.max_concentrations, reference.maxC_target[0], rtol=0.05)
    default = get_normalizer("vahadane").fit(real[TARGET])
    for name in SOURCES:
        source = real[name]
        expected = reference.transform(source.copy())
        change = mad(expected, source)
        error = mad(ours.transform(source), expected)
        assert error <= 3.0 and error < 0.2 * change, (
            f"{name}: MAD {error:.2f} (change {change:.1f})"
        )
        # Default mode: tissue only for statistics, background kept; compare on tissue pixels.
        tissue = tissue_mask(NP, source.reshape(1, -1, 3), 0.8)[0].reshape(source.shape[:2])
        error = mad(default.transform(source), expected, tissue)
        assert error < 0.4 * mad(expected, source, tissue), name


# --------------------------------------------------------------------------- Macenko
def test_macenko_matches_torchstain(torchstain):
    real = real_tiles()
    for name in (TARGET, *SOURCES):
        reference = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
        reference.fit(real[name])
        exact = get_normalizer("macenko", preserve_background=False, n_samples=1 << 20)
        exact.fit(real[name])
        assert angles_deg(exact.stain_matrix, reference.HERef.T).max() < 0.1, name
        np.testing.assert_allclose(exact.max_concentrations, reference.maxCRef, rtol=1e-3)
        sampled = extract_stain_matrix(real[name], method="macenko")  # 4096-pixel sample
        assert angles_deg(sampled, reference.HERef.T).max() < 2.0, name

    reference = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    reference.fit(real[TARGET])
    ours = get_normalizer("macenko", preserve_background=False, n_samples=1 << 20)
    ours.fit(real[TARGET])
    for name in SOURCES:
        expected, _, _ = reference.normalize(real[name], stains=False)
        error = mad(ours.transform(real[name]), expected)
        assert error <= 1.0, f"{name}: MAD {error:.2f}"


# --------------------------------------------------------------------------- Reinhard
def test_reinhard_matches_torchstain(torchstain):
    real = real_tiles()
    reference = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
    reference.fit(real[TARGET])
    ours = get_normalizer("reinhard", preserve_background=False).fit(real[TARGET])
    np.testing.assert_allclose(ours.lab_mean, reference.target_means, atol=0.05)
    np.testing.assert_allclose(ours.lab_std, reference.target_stds, rtol=1e-3)
    for name in SOURCES:
        expected = reference.normalize(real[name])
        change = mad(expected, real[name])
        error = mad(ours.transform(real[name]), expected)
        assert error <= 1.0 and error < 0.2 * change, f"{name}: MAD {error:.2f}"


# --------------------------------------------------------------------------- real-tile properties
def test_real_tiles_normalized_to_themselves_change_little():
    real = real_tiles()
    for name, tile in real.items():
        for method, bound in (("vahadane", 6.0), ("reinhard", 0.5)):
            out = get_normalizer(method).fit(tile).transform(tile)
            assert mad(out, tile) < bound, f"{method} {name}"


@pytest.mark.filterwarnings("ignore::breastpath.stain.StainWarning")
def test_real_patch_batches():
    """A batch of real 50x50 IDC patches: nearly all normalized, the backends agree."""
    import torch

    patches = idc_patches()
    real = real_tiles()
    for method in ("vahadane", "macenko", "reinhard"):
        ours = get_normalizer(method).fit(real[TARGET])
        out, ok = ours.transform(patches, return_status=True)
        assert ok.mean() > 0.9
        on_torch = get_normalizer(method, device="cpu").fit(real[TARGET])
        diff = np.abs(on_torch.transform(patches).astype(int) - out.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
        assert isinstance(ours.transform(torch.tensor(patches)), torch.Tensor)
