"""Background augmentation: synthetic tissue-free frames and white edge bands."""

from __future__ import annotations

import pytest
import torch

from breastpath.data.augment import (
    GLASS_RGB,
    add_background,
    background_frames,
    negative_class_of,
    white_bands,
)
from breastpath.errors import ConfigError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_background_frames_are_seeded_and_tissue_free():
    frames = background_frames(400, size=(50, 50), generator=_gen(1))
    assert frames.shape == (400, 50, 50, 3) and frames.dtype == torch.uint8
    assert torch.equal(frames, background_frames(400, size=(50, 50), generator=_gen(1)))
    assert not torch.equal(frames, background_frames(400, size=(50, 50), generator=_gen(2)))
    per_frame = frames.float().mean(dim=(1, 2))  # (400, 3) mean colour of each frame
    spread = frames.float().std(dim=(1, 2)).max(dim=1).values
    assert float(spread.max()) < 8.0  # near-uniform: pixel noise only
    glass = torch.tensor(GLASS_RGB, dtype=torch.float32)
    assert bool(((per_frame - glass).abs().max(dim=1).values < 14).any())  # some glass
    assert bool((per_frame.min(dim=1).values > 243).any())  # some white
    assert bool((per_frame.max(dim=1).values < 22).any())  # some black


def test_white_bands_cover_at_most_half_and_only_the_chosen_rows():
    images = torch.full((64, 50, 50, 3), 7, dtype=torch.uint8)
    out = white_bands(images, fraction=0.5, generator=_gen(3))
    banded = (out == 255).flatten(1).any(dim=1)
    assert 10 < int(banded.sum()) < 54
    assert bool((out[:, :25] == 7).all())  # the top half always shows the tissue
    assert bool((out[banded, -2:] == 255).all())
    assert torch.equal(out[~banded], images[~banded])
    assert torch.equal(white_bands(images, fraction=0.0, generator=_gen(3)), images)


def test_add_background_relabels_exactly_the_replaced_rows():
    images = torch.randint(0, 256, (200, 50, 50, 3), generator=_gen(4), dtype=torch.uint8)
    images[:, ::2, ::2] = 128  # structure no synthetic frame has
    targets = torch.ones(200, dtype=torch.long)
    out, y = add_background(
        images, targets, rows=slice(0, 200), fraction=0.2, negative_class=0, generator=_gen(5)
    )
    replaced = out.float().std(dim=(1, 2)).max(dim=1).values < 8.0
    assert 15 < int(replaced.sum()) < 70
    assert torch.equal(y == 0, replaced)
    same, y0 = add_background(
        images, targets, rows=slice(0, 200), fraction=0.0, negative_class=0, generator=_gen(5)
    )
    assert same is images and y0 is targets


def test_add_background_draws_once_per_row_of_the_global_batch():
    images = torch.randint(0, 256, (40, 50, 50, 3), generator=_gen(6), dtype=torch.uint8)
    targets = torch.ones(40, dtype=torch.long)
    options = {"fraction": 0.3, "negative_class": 0}
    full_images, full = add_background(
        images, targets, rows=slice(0, 40), generator=_gen(7), **options
    )
    parts = []
    for start, stop in ((0, 15), (15, 40)):  # two processes, each with its own rows
        ours_images, ours = add_background(
            images, targets[start:stop], rows=slice(start, stop), generator=_gen(7), **options
        )
        assert torch.equal(ours_images, full_images)
        parts.append(ours)
    assert torch.equal(torch.cat(parts), full)


def test_negative_class_needs_exactly_one_non_cancer_class():
    assert negative_class_of(["non-IDC", "IDC"], [1]) == 0
    with pytest.raises(ConfigError, match="exactly one non-cancer class"):
        negative_class_of(["fibroadenoma", "tubular_adenoma", "ductal_carcinoma"], [2])


def test_training_without_validation_keeps_the_last_epoch(idc_tree, tmp_path):
    """The final model trained on every patient: background augmentation on, no validation."""
    import json

    from breastpath.checkpoint import load_checkpoint
    from breastpath.config import DataConfig, TrainConfig
    from breastpath.data.prepare import prepare
    from breastpath.train.loop import train

    prepared = tmp_path / "all"
    prepare([idc_tree], prepared, config=DataConfig(test_frac=0.0, val_frac=0.0, seed=0))
    config = TrainConfig.from_flat(
        epochs=2,
        batch_size=16,
        progress=False,
        background_frac=0.25,
        model_args={"widths": [8, 16, 16], "hidden": 32},
    )
    summary = train(prepared, tmp_path / "run", config)
    assert summary["best_epoch"] == 2 and summary["threshold"] == 0.5
    best = load_checkpoint(tmp_path / "run" / "best.json")
    assert best.meta.epoch == 2 and best.meta.threshold == 0.5
    last = json.loads((tmp_path / "run" / "last.json").read_text())
    assert [row["val_loss"] for row in last["resume"]["history"]] == [None, None]
    assert best.meta.train["augment"]["background_frac"] == 0.25


def test_background_frac_is_range_checked():
    from breastpath.config import TrainConfig

    with pytest.raises(ConfigError, match="background_frac"):
        TrainConfig.from_flat(background_frac=0.9)
