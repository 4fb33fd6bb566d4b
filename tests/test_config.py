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

#: The flat ``train`` blocks of the bundled checkpoints as an earlier version wrote them (the
#: models shipped before the sectioned config; today's bundled ones are nested, see below).
EARLIER_FLAT_BLOCKS = {
    "default": {
        "model": "cancernet",
        "model_args": {},
        "epochs": 40,
        "batch_size": 64,
        "lr": 0.01,
        "optimizer": "adagrad",
        "momentum": 0.9,
        "weight_decay": 0.0,
        "schedule": "cosine",
        "warmup_epochs": 0,
        "label_smoothing": 0.0,
        "class_weights": True,
        "augment": True,
        "color_jitter": 0.05,
        "patience": 15,
        "min_delta": 0.0001,
        "monitor": "val_auc",
        "threshold_metric": "balanced_accuracy",
        "amp": True,
        "compile": False,
        "device": "auto",
        "num_threads": 0,
        "seed": 0,
        "max_steps_per_epoch": 0,
        "eval_batch_size": 256,
        "progress": False,
    },
    "breakhis": {
        "model": "efficientnet_lite0",
        "model_args": {"input_size": 160},
        "epochs": 6,
        "batch_size": 32,
        "lr": 0.001,
        "optimizer": "adamw",
        "momentum": 0.9,
        "weight_decay": 1e-05,
        "schedule": "cosine",
        "warmup_epochs": 0,
        "label_smoothing": 0.1,
        "class_weights": True,
        "augment": True,
        "color_jitter": 0.05,
        "stain_augment": "none",
        "stain_sigma": 0.0,
        "patience": 6,
        "min_delta": 0.0001,
        "monitor": "val_loss",
        "threshold_metric": "balanced_accuracy",
        "amp": True,
        "compile": False,
        "device": "auto",
        "num_threads": 2,
        "seed": 0,
        "max_steps_per_epoch": 0,
        "eval_batch_size": 64,
        "progress": False,
        "pretrained": True,
        "weights": "",
        "freeze_epochs": 1,
        "finetune_lr_scale": 0.5,
        "backbone_lr_scale": 0.5,
        "tta": "flips",
        "head": "linear",
        "backbone_checkpoint": "",
        "svm_c": [0.1, 1.0, 10.0],
        "svm_max_train": 4000,
    },
}


@pytest.mark.parametrize("name", sorted(EARLIER_FLAT_BLOCKS))
def test_the_flat_train_block_of_earlier_bundled_checkpoints_still_loads(name):
    raw = EARLIER_FLAT_BLOCKS[name]
    config = TrainConfig.from_dict(raw)
    assert config.model.name == raw["model"] and config.model.args == raw["model_args"]
    assert config.stop.epochs == raw["epochs"] and config.optim.lr == raw["lr"]
    assert config.stop.monitor == raw["monitor"] and config.runtime.device == raw["device"]
    # every flat key lands somewhere and reads back unchanged
    flat = config.to_flat()
    for key, value in raw.items():
        assert flat[key] == (tuple(value) if isinstance(value, list) else value), key


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_the_train_block_of_bundled_checkpoints_loads_and_round_trips(name):
    raw = json.loads((assets_dir() / f"{BUNDLED[name]}.json").read_text())["train"]
    config = TrainConfig.from_dict(raw)
    again = json.loads(json.dumps(config.training_dict()))
    defaults = json.loads(json.dumps(TrainConfig().training_dict()))
    # every stored option reads back unchanged; options added since take their defaults
    expected = {
        section: {**defaults[section], **value} if isinstance(value, dict) else value
        for section, value in raw.items()
    }
    assert again == expected


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
    [
        "default_model.yaml",
        "student_cancernet.yaml",
        "teacher_lite0.yaml",
        "teacher_cancernet.yaml",
        "breakhis_model.yaml",
        "lite0_80_ema.yaml",
        "lite0_80_dropout.yaml",
        "lite0_80_drop_bg.yaml",
        "teacher_lite0_s0.yaml",
        "teacher_lite0_s1.yaml",
        "student_lite0.yaml",
        "student_lite0_t1.yaml",
    ],
)
def test_the_shipped_recipes_still_load(name):
    from breastpath.config import load_yaml
    from conftest import REPO

    raw = load_yaml(REPO / "scripts" / name)
    flat = TrainConfig.from_dict(raw).to_flat()
    for key, value in flatten(raw).items():
        assert flat[key] == (tuple(value) if isinstance(value, list) else value), key


def test_a_recipe_extends_another_and_says_only_what_differs(tmp_path):
    from breastpath.config import load_yaml

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "base.yaml").write_text(
        "model: efficientnet_lite0\nmodel_args:\n  input_size: 80\n  drop_rate: 0.2\nlr: 0.001\n"
    )
    (tmp_path / "recipes" / "seed1.yaml").write_text(
        "extends: base.yaml\nseed: 1\nmodel_args:\n  drop_rate: 0.0\n"
    )
    (tmp_path / "child.yaml").write_text("extends: recipes/seed1.yaml\nlr: 0.01\n")
    raw = load_yaml(tmp_path / "child.yaml")
    assert raw == {
        "model": "efficientnet_lite0",
        "model_args": {"input_size": 80, "drop_rate": 0.0},
        "lr": 0.01,
        "seed": 1,
    }
    config = TrainConfig.from_dict(raw)
    assert config.seed == 1 and config.optim.lr == 0.01


def test_the_shipped_student_is_the_default_recipe_with_distillation():
    from breastpath.config import load_yaml
    from conftest import REPO

    default = TrainConfig.from_dict(load_yaml(REPO / "scripts" / "default_model.yaml")).to_flat()
    student = TrainConfig.from_dict(load_yaml(REPO / "scripts" / "student_lite0.yaml")).to_flat()
    # the student's weight and temperature are the library's defaults, and its teachers are
    # given at run time (--teacher), so its recipe and the shipped one train alike without them
    assert (student["distill_weight"], student["distill_temperature"]) == (0.5, 2.0)
    assert {k for k in default if default[k] != student[k]} == set()
    teacher = TrainConfig.from_dict(load_yaml(REPO / "scripts" / "teacher_lite0_s1.yaml"))
    assert {k for k, v in teacher.to_flat().items() if default[k] != v} == {"seed"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("extends: missing.yaml\n", "no such config file"),
        ("extends: [a.yaml]\n", "must name a YAML file"),
        ("extends: loop.yaml\n", "loops back"),
    ],
)
def test_a_bad_extends_is_a_config_error(tmp_path, text, message):
    from breastpath.config import load_yaml

    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(tmp_path / "loop.yaml")
