"""Greyscale augmentation: a seeded share of each batch shown as luminance only."""

from __future__ import annotations

import pytest
import torch

from breastpath.config import TrainConfig
from breastpath.data.augment import augment_batch, random_grayscale
from breastpath.errors import ConfigError


def _batch(n: int = 400) -> torch.Tensor:
    return torch.rand((n, 3, 8, 8), generator=torch.Generator().manual_seed(1))


def test_the_chosen_share_turns_grey_and_the_rest_is_untouched():
    x = _batch()
    out = random_grayscale(x, torch.Generator().manual_seed(2), fraction=0.25)
    grey = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert 0.18 < float(grey.float().mean()) < 0.32  # 400 draws of p = 0.25 (seeded)
    torch.testing.assert_close(out[~grey], x[~grey], rtol=0, atol=0)
    luminance = 0.299 * x[grey, 0] + 0.587 * x[grey, 1] + 0.114 * x[grey, 2]
    torch.testing.assert_close(out[grey, 0], luminance)
    again = random_grayscale(x, torch.Generator().manual_seed(2), fraction=0.25)
    assert torch.equal(out, again)


def test_no_greyscale_draws_nothing_so_earlier_recipes_train_as_before():
    images = torch.randint(0, 256, (16, 10, 10, 3), generator=torch.Generator().manual_seed(0))
    options = {"mean": torch.zeros(3), "std": torch.ones(3), "device": "cpu"}
    plain = augment_batch(images.byte(), generator=torch.Generator().manual_seed(5), **options)
    generator = torch.Generator().manual_seed(5)
    zero = augment_batch(images.byte(), generator=generator, grayscale=0.0, **options)
    assert torch.equal(plain, zero)
    state = generator.get_state()
    assert torch.equal(random_grayscale(zero, generator, fraction=0.0), zero)
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_share_outside_0_1_is_a_config_error(value):
    with pytest.raises(ConfigError, match="grayscale_frac"):
        TrainConfig.from_dict({"grayscale_frac": value})
