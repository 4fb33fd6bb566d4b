"""Train configs: small sections, one flat vocabulary, and every earlier form still read."""

from __future__ import annotations

import dataclasses
import json

import pytest

from breastpath.checkpoint import BUNDLED, assets_dir
from breastpath.choices import MONITORS, OPTIMIZERS, STAIN_AUGMENTS, TTA_MODES
from breastpath.config import (
    FLAT_KEYS,
    SECTIONS,
    RuntimeConfig,
    TrainConfig,
    flatten,
    option_fields,
)
from breastpath.errors import ConfigError


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_the_flat_train_block_of_bundled_checkpoints_still_loads(name):
    raw = json.loads((assets_dir() / f"{BUNDLED[name]}.json").read_text())["train"]
    assert isinstance(raw["model"], str)  # written by an earlier version: one flat mapping
    config = TrainConfig.from_dict(raw)
    assert config.model.name == raw["model"] and config.model.args == raw["model_args"]
    assert config.stop.epochs == raw["epochs"] and config.optim.lr == raw["lr"]
    assert config.stop.monitor == raw["monitor"] and config.runtime.device == raw["device"]
    # every flat key lands somewhere and reads back unchanged
    flat = config.to_flat()
    for key, value in raw.items():
        assert flat[key] == (tuple(value) if isinstance(value, list) else value), key


def test_nested_and_flat_forms_round_trip():
    config = TrainConfig.from_flat(
        model="efficientnet_lite0", model_args={"input_size": 96}, lr=1e-3, optimizer="adamw",
        epochs=6, freeze_epochs=1, tta="flips", head="svm", svm_c=[1.0, 10.0], augment=False,
        num_threads=2, seed=3,
    )  # fmt: skip
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainConfig.from_flat(config.to_flat()) == config
    assert config.head.svm_c == (1.0, 10.0) and config.augment.enabled is False
    assert config.with_options(lr=0.1).optim.lr == 0.1


def test_the_checkpoint_block_holds_training_choices_only():
    config = TrainConfig.from_flat(device="cuda:1", num_threads=4, progress=False, compile=True)
    block = config.training_dict()
    assert set(block) == {"seed", *SECTIONS} - {"runtime"}
    runtime_keys = {f.name for f in dataclasses.fields(RuntimeConfig)}
    assert not runtime_keys & set(flatten(block))
    # read back without a runtime, the runtime is the default one
    assert TrainConfig.from_dict(block).runtime == RuntimeConfig()


def test_flat_names_are_unique_and_cover_every_field():
    fields = [(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    assert sorted(FLAT_KEYS.values()) == sorted([*fields, ("", "seed")])
    assert all(option_fields()[k].metadata.get("help") for k in FLAT_KEYS if k != "model_args")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"epochz": 3}, "epochz"),
        ({"optim": {"learning_rate": 0.1}}, "learning_rate"),
        ({"optimizer": "rmsprop"}, "adagrad"),
        ({"monitor": "val_accuracy"}, "monitor"),
        ({"tta": "rotations"}, "tta"),
        ({"stain_augment": "tellez"}, "stain_augment"),
        ({"lr": "fast"}, "lr"),
        ({"epochs": 2.5}, "epochs"),
        ({"augment": "yes"}, "enabled"),
        ({"svm_c": ["a"]}, "svm_c"),
        ({"epochs": 2, "freeze_epochs": 3}, "freeze_epochs"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_bad_options_are_named(options, needle):
    with pytest.raises(ConfigError, match=needle):
        TrainConfig.from_dict(options)


def test_allowed_values_come_from_choices():
    import typing

    from breastpath.config import option_type

    assert typing.get_args(option_type("optimizer")) == OPTIMIZERS
    assert typing.get_args(option_type("monitor")) == MONITORS
    assert typing.get_args(option_type("tta")) == TTA_MODES
    assert typing.get_args(option_type("stain_augment")) == STAIN_AUGMENTS


@pytest.mark.parametrize(
    "name",
    ["default_model.yaml", "teacher_lite0.yaml", "teacher_cancernet.yaml", "breakhis_model.yaml"],
)
def test_the_shipped_recipes_still_load(name):
    from breastpath.config import load_yaml
    from conftest import REPO

    raw = load_yaml(REPO / "scripts" / name)
    flat = TrainConfig.from_dict(raw).to_flat()
    for key, value in flatten(raw).items():
        assert flat[key] == (tuple(value) if isinstance(value, list) else value), key
