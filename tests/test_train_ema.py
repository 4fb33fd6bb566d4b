"""The moving average of the weights (``optim.ema_half_life``): what it averages, what a run
saves with it, and that a resumed run with it ends where an uninterrupted one does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from breastpath.checkpoint import load_checkpoint
from breastpath.config import TrainConfig
from breastpath.errors import CheckpointError, ConfigError
from breastpath.train.ema import ema_decay, make_ema
from breastpath.train.loop import train

TINY = {"widths": [8, 16, 16], "hidden": 32}


def _config(**changes) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 16, "lr": 0.01, "progress": False, "model_args": TINY}
    return TrainConfig.from_flat({**base, **changes})


def test_the_average_follows_the_weights_by_the_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = make_ema(model, half_life_epochs=2.0, steps_per_epoch=5)
    assert ema is not None
    decay = ema_decay(2.0, steps_per_epoch=5)
    assert decay**10 == pytest.approx(0.5)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].running_mean.fill_(4.0)
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].running_mean.fill_(0.0)
    ema.update_parameters(model)
    expected = decay * 1.0 + (1 - decay) * 3.0
    torch.testing.assert_close(ema.module[0].weight, torch.full((2, 3), expected))
    # batch-norm statistics are averaged too, so the average can be served as it is
    torch.testing.assert_close(ema.module[1].running_mean, torch.full((2,), 4.0 * decay))


def test_no_half_life_means_no_average():
    assert make_ema(nn.Linear(2, 2), half_life_epochs=0.0, steps_per_epoch=10) is None
    with pytest.raises(ValueError):
        ema_decay(-1.0, steps_per_epoch=10)
    with pytest.raises(ConfigError, match="ema_half_life"):
        _config(ema_half_life=-0.5)


def test_a_run_with_an_average_saves_the_average_and_the_trained_weights(prepared_idc, tmp_path):
    train(prepared_idc, tmp_path / "ema", _config(ema_half_life=0.5))
    last = load_checkpoint(tmp_path / "ema" / "last.json")
    raw, averaged = last.prefixed("raw."), last.model_state()
    assert set(raw) == set(averaged)
    differs = [
        k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], averaged[k])
    ]
    assert differs, "the average should lag the trained weights"
    best = load_checkpoint(tmp_path / "ema" / "best.json")
    assert not any(k.startswith("raw.") for k in best.tensors)  # served: the average only
    assert best.meta.train["optim"]["ema_half_life"] == 0.5


def test_resume_with_an_average_continues_to_the_same_result(prepared_idc, tmp_path):
    config = {"schedule": "none", "ema_half_life": 0.5}
    train(prepared_idc, tmp_path / "full", _config(epochs=3, **config))
    train(prepared_idc, tmp_path / "part", _config(epochs=2, **config))
    train(prepared_idc, tmp_path / "part", _config(epochs=3, **config), resume=True)
    full = load_checkpoint(tmp_path / "full" / "last.json")
    part = load_checkpoint(tmp_path / "part" / "last.json")
    for key, value in full.tensors.items():
        if key.startswith(("model.", "raw.")):
            torch.testing.assert_close(part.tensors[key], value, rtol=1e-6, atol=1e-6)


def test_resuming_a_run_without_an_average_with_one_is_refused(prepared_idc, tmp_path):
    train(prepared_idc, tmp_path / "run", _config(epochs=1))
    with pytest.raises(CheckpointError, match="ema_half_life"):
        train(prepared_idc, tmp_path / "run", _config(epochs=2, ema_half_life=1.0), resume=True)
