"""Training: runs end to end, writes a self-describing run, resumes, is deterministic on CPU."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from breastpath.checkpoint import build_model, load_checkpoint, save_checkpoint
from breastpath.config import TrainConfig
from breastpath.errors import CheckpointError, ConfigError
from breastpath.models import create_model
from breastpath.train.loop import train
from breastpath.train.optim import class_weights, lr_at

TINY = {"widths": [8, 16, 16], "hidden": 32}


def _config(**changes) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 16, "lr": 0.01, "progress": False, "model_args": TINY}
    return TrainConfig.from_flat({**base, **changes})


def test_run_folder_is_self_describing(trained_run):
    for name in (
        "config.yaml",
        "splits.csv",
        "history.csv",
        "best.json",
        "best.safetensors",
        "last.json",
        "last.safetensors",
    ):
        assert (trained_run / name).is_file(), name
    meta = json.loads((trained_run / "best.json").read_text())
    assert meta["model"] == {"name": "cancernet", "num_classes": 2, "args": TINY}
    assert meta["input_size"] == [50, 50]
    assert meta["class_names"] == ["non-IDC", "IDC"]
    assert 0.0 < meta["threshold"] < 1.0
    assert "validation" in meta["threshold_rule"]
    assert meta["data"]["split"]["seed"] == 0
    assert meta["train"]["optim"]["optimizer"] == "adagrad"
    # the training choices, never where it ran: runtime settings stay in config.yaml
    assert "runtime" not in meta["train"] and "device" not in json.dumps(meta["train"])
    assert set(meta["train"]) == {"seed", "model", "optim", "augment", "stop", "head", "distill"}
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3
    assert meta["metrics"]["val_at_threshold"]["n"] > 0
    model = build_model(load_checkpoint(trained_run))
    assert isinstance(model, torch.nn.Module)


def test_model_learns_the_generated_classes(trained_run):
    meta = json.loads((trained_run / "best.json").read_text())
    assert meta["metrics"]["val_at_threshold"]["roc_auc"] > 0.9


def test_same_seed_gives_same_weights_on_cpu(prepared_idc, tmp_path):
    train(prepared_idc, tmp_path / "a", _config())
    train(prepared_idc, tmp_path / "b", _config())
    a = load_checkpoint(tmp_path / "a" / "last.json").tensors
    b = load_checkpoint(tmp_path / "b" / "last.json").tensors
    for key in a:
        if key.startswith("model."):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_resume_continues_to_the_same_result(prepared_idc, tmp_path):
    # a constant lr, so that stopping after 2 of 3 epochs is the same as being interrupted
    train(prepared_idc, tmp_path / "full", _config(epochs=3, schedule="none"))
    train(prepared_idc, tmp_path / "part", _config(epochs=2, schedule="none"))
    summary = train(
        prepared_idc, tmp_path / "part", _config(epochs=3, schedule="none"), resume=True
    )
    assert summary["epochs_run"] == 3
    full = load_checkpoint(tmp_path / "full" / "last.json")
    part = load_checkpoint(tmp_path / "part" / "last.json")
    for key, value in full.model_state().items():
        torch.testing.assert_close(part.model_state()[key], value, rtol=1e-6, atol=1e-6)


def test_monitoring_val_auc_keeps_the_best_auc_epoch(prepared_idc, tmp_path):
    summary = train(prepared_idc, tmp_path / "auc", _config(epochs=3, monitor="val_auc"))
    history = json.loads((tmp_path / "auc" / "last.json").read_text())["resume"]["history"]
    aucs = [row["val_auc"] for row in history]
    assert summary["best_epoch"] == 1 + aucs.index(max(aucs))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_other_optimizers_train(prepared_idc, tmp_path, optimizer):
    summary = train(
        prepared_idc, tmp_path / optimizer, _config(epochs=1, optimizer=optimizer, lr=0.001)
    )
    assert summary["epochs_run"] == 1


def test_tampered_or_mismatched_checkpoints_are_refused(trained_run, tmp_path):
    import shutil

    for name in ("best.json", "best.safetensors"):
        shutil.copy(trained_run / name, tmp_path / name)
    data = bytearray((tmp_path / "best.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "best.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path / "best.json")

    good = load_checkpoint(trained_run)
    meta = good.meta.to_dict()
    meta["model"] = {**meta["model"], "args": {"widths": [4, 8, 8], "hidden": 32}}
    save_checkpoint(tmp_path / "other", tensors=good.tensors, meta=meta)
    with pytest.raises(CheckpointError, match="do not match"):
        build_model(load_checkpoint(tmp_path / "other.json"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nothing.json")


def test_class_weights_balance_the_loss():
    weights = class_weights(np.array([0, 0, 0, 1]), 2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])


def test_lr_schedule_warms_up_and_decays():
    config = TrainConfig.from_flat(epochs=10, lr=0.1, warmup_epochs=2)
    lrs = [lr_at(e, config.optim, epochs=config.stop.epochs) for e in range(10)]
    assert lrs[0] < lrs[1] < lrs[2] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))


def test_config_refuses_unknown_and_invalid_options():
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="monitor"):
        TrainConfig.from_dict({"monitor": "val_accuracy"})


def test_cancernet_shapes():
    net = create_model("cancernet", num_classes=8).eval()
    assert net(torch.zeros(2, 3, 224, 224)).shape == (2, 8)
    assert net(torch.zeros(2, 3, 50, 50)).shape == (2, 8)


def test_run_config_keeps_the_runtime_apart(trained_run):
    from breastpath.config import load_yaml

    saved = load_yaml(trained_run / "config.yaml")
    assert set(saved) == {"train", "runtime", "data"}
    assert saved["runtime"]["progress"] is False
    config = TrainConfig.from_dict({**saved["train"], "runtime": saved["runtime"]})
    assert config.stop.epochs == 3 and config.model.args == TINY
