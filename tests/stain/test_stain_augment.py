"""Stain augmentation: Tellez-style H&E concentration perturbation and HED jitter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stain_support import angles_deg, mad, synthetic_tiles

from breastpath.errors import StainError
from breastpath.stain import extract_stain_matrix, hed_jitter, stain_augment

AUGMENTERS = {
    "vahadane": lambda x, **kw: stain_augment(x, method="vahadane", **kw),
    "macenko": lambda x, **kw: stain_augment(x, method="macenko", **kw),
    "ruifrok": lambda x, **kw: stain_augment(x, method="ruifrok", **kw),
    "hed": hed_jitter,
}


def _zero(name: str) -> dict[str, float]:
    if name == "hed":
        return {"alpha": 0.0, "beta": 0.0}
    return {"sigma_alpha": 0.0, "sigma_beta": 0.0}


@pytest.mark.parametrize("name", sorted(AUGMENTERS))
def test_zero_strength_is_the_identity(name):
    tiles = synthetic_tiles()
    batch = tiles["batch"]
    np.testing.assert_array_equal(AUGMENTERS[name](batch, rng=0, **_zero(name)), batch)


@pytest.mark.parametrize("name", sorted(AUGMENTERS))
def test_seeded_batches_are_reproducible_and_vary_per_image(name):
    tiles = synthetic_tiles()
    batch = np.repeat(tiles["target"][None], 4, axis=0)
    first = AUGMENTERS[name](batch, rng=3)
    assert first.shape == batch.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, AUGMENTERS[name](batch, rng=3))
    np.testing.assert_array_equal(first, AUGMENTERS[name](batch, rng=np.random.default_rng(3)))
    assert not np.array_equal(first, AUGMENTERS[name](batch, rng=4))
    changes = [mad(first[i], batch[i]) for i in range(4)]
    assert min(changes) > 0.5 and len({round(c, 3) for c in changes}) == 4
    assert not np.array_equal(first[0], first[1])  # one draw per image


def test_generator_state_advances_between_batches():
    tiles = synthetic_tiles()
    batch = tiles["batch"]
    rng = np.random.default_rng(0)
    a, b = hed_jitter(batch, rng=rng), hed_jitter(batch, rng=rng)
    assert not np.array_equal(a, b)
    generator = torch.Generator().manual_seed(0)
    c = stain_augment(torch.from_numpy(batch), rng=generator, method="ruifrok")
    d = stain_augment(torch.from_numpy(batch), rng=generator, method="ruifrok")
    assert isinstance(c, torch.Tensor) and not torch.equal(c, d)
    again = stain_augment(batch, rng=torch.Generator().manual_seed(0), method="ruifrok")
    np.testing.assert_array_equal(c.numpy(), again)


@pytest.mark.parametrize("name", sorted(AUGMENTERS))
def test_single_image_and_tensor_forms(name):
    tiles = synthetic_tiles()
    image = tiles["source"]
    out = AUGMENTERS[name](image, rng=1)
    assert isinstance(out, np.ndarray) and out.shape == image.shape
    tensor = AUGMENTERS[name](torch.from_numpy(image), rng=1)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8
    np.testing.assert_array_equal(tensor.numpy(), out)


def test_stain_augment_changes_stain_amounts_not_stain_colours():
    tiles = synthetic_tiles()
    tile = tiles["target"]
    out = stain_augment(tile, rng=2, sigma_alpha=0.3, sigma_beta=0.0)
    assert mad(out, tile) > 2.0
    angles = angles_deg(extract_stain_matrix(out), extract_stain_matrix(tile))
    assert angles.max() < 3.0


@pytest.mark.parametrize("name", sorted(AUGMENTERS))
def test_background_and_blank_tiles_are_kept(name):
    tiles = synthetic_tiles()
    tile = tiles["source"].copy()
    tile[:16] = 255
    out = AUGMENTERS[name](tile, rng=5, **({"beta": 0.2} if name == "hed" else {}))
    np.testing.assert_array_equal(out[:16], tile[:16])
    blank = np.full((8, 8, 3), 255, np.uint8)
    np.testing.assert_array_equal(AUGMENTERS[name](blank, rng=5), blank)
    tiny = np.full((1, 1, 3), 128, np.uint8)
    out = AUGMENTERS[name](tiny, rng=5)
    assert out.shape == tiny.shape and out.dtype == np.uint8
    if name in ("vahadane", "macenko"):  # no stain matrix from one pixel: left unchanged
        np.testing.assert_array_equal(out, tiny)


def test_bad_options():
    image = np.full((4, 4, 3), 128, np.uint8)
    with pytest.raises(StainError):
        stain_augment(image, method="reinhard")
    with pytest.raises(StainError):
        hed_jitter(image, alpha=-1.0)
