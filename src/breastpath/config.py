"""Configuration dataclasses, saved with every run and inside every checkpoint.

Each config converts to and from plain dicts (``to_dict`` / ``from_dict``) and YAML files;
unknown keys are refused so that a typo in ``run.yaml`` is not silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from breastpath.errors import ConfigError

T = TypeVar("T", bound="_Config")

#: ``DataConfig.stain`` values: how the cache is stain-normalized.
STAIN_METHODS = ("none", "reinhard", "macenko", "vahadane")
#: ``TrainConfig.stain_augment`` values: Tellez H&E augmentation with each image's stains found
#: by Macenko or Vahadane, or the fixed Ruifrok vectors; ``hed``: a simple HED jitter.
STAIN_AUGMENTS = ("none", "hed", "ruifrok", "macenko", "vahadane")


class _Config:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
        data = dict(data or {})
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
        for key, value in list(data.items()):
            if isinstance(value, list) and names[key].type.startswith("tuple"):
                data[key] = tuple(value)
        try:
            config = cls(**data)
        except TypeError as exc:
            raise ConfigError(f"invalid {cls.__name__}: {exc}") from None
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values out of range."""

    def replace(self: T, **changes: Any) -> T:
        config = dataclasses.replace(self, **changes)  # type: ignore[type-var]
        config.validate()
        return config


@dataclass(frozen=True)
class DataConfig(_Config):
    """How a source was prepared (``breastpath prepare``)."""

    dataset: str = "auto"
    task: str = "binary"
    magnification: str = "all"
    image_size: int = 0  # 0: from the data (50 for IDC, 224 otherwise)
    test_frac: float = 0.2
    val_frac: float = 0.1
    seed: int = 0
    # stain normalization of the whole cache to a target fitted on training images only
    stain: str = "none"  # none | reinhard | macenko | vahadane
    stain_sample: int = 256  # training images (seeded sample) the target is fitted on

    def validate(self) -> None:
        if self.stain not in STAIN_METHODS:
            raise ConfigError(
                f"unknown stain method {self.stain!r}; use one of {', '.join(STAIN_METHODS)}"
            )
        if self.stain_sample < 1:
            raise ConfigError("stain_sample must be >= 1")
        if not 0 <= self.test_frac < 1 or not 0 <= self.val_frac < 1:
            raise ConfigError("test_frac and val_frac must be in [0, 1)")
        if self.image_size < 0 or self.image_size > 2048:
            raise ConfigError("image_size must be between 1 and 2048 (0 = from the data)")


@dataclass(frozen=True)
class TrainConfig(_Config):
    """Everything that decides a training run (``breastpath train``)."""

    model: str = "cancernet"
    model_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 40
    batch_size: int = 64
    lr: float = 0.01
    optimizer: str = "adagrad"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine | step | none
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    class_weights: bool = True
    augment: bool = True
    color_jitter: float = 0.05
    stain_augment: str = "none"  # none | hed | ruifrok | macenko | vahadane (STAIN_AUGMENTS)
    stain_sigma: float = 0.0  # strength; 0: the method's default (0.05 for hed, 0.2 otherwise)
    patience: int = 8
    min_delta: float = 1e-4
    monitor: str = "val_loss"  # what early stopping and `best` follow: val_loss or val_auc
    threshold_metric: str = "balanced_accuracy"
    amp: bool = True
    compile: bool = False
    device: str = "auto"
    num_threads: int = 0
    seed: int = 0
    max_steps_per_epoch: int = 0  # 0: the whole training split each epoch
    eval_batch_size: int = 256
    progress: bool = True
    # transfer learning (breastpath.models.pretrained, breastpath.train.finetune)
    pretrained: bool = False  # offline ImageNet weights (installed packages only)
    weights: str = ""  # a local state dict to start from instead
    freeze_epochs: int = 0  # stage 1: train only the head for this many epochs
    finetune_lr_scale: float = 1.0  # stage 2: lr multiplier for the whole network
    backbone_lr_scale: float = 1.0  # discriminative lr: backbone lr = head lr x this
    tta: str = "none"  # test-time augmentation stored in the checkpoint: none, flips, dihedral
    # CNN + SVM hybrid (breastpath.train.hybrid)
    head: str = "linear"  # linear (trained end to end) or svm (RBF SVM on embeddings)
    backbone_checkpoint: str = ""  # svm head: embed with this trained checkpoint
    svm_c: tuple[float, ...] = (0.1, 1.0, 10.0)  # C values tried; the best on validation wins
    svm_max_train: int = 4000  # at most this many training embeddings (0: all)

    def validate(self) -> None:
        if self.optimizer not in ("adagrad", "adam", "adamw", "sgd"):
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; use adagrad, adam, adamw or sgd"
            )
        if self.schedule not in ("cosine", "step", "none"):
            raise ConfigError(f"unknown schedule {self.schedule!r}; use cosine, step or none")
        if self.monitor not in ("val_loss", "val_auc"):
            raise ConfigError(f"unknown monitor {self.monitor!r}; use val_loss or val_auc")
        if self.threshold_metric not in ("balanced_accuracy", "f1", "youden"):
            raise ConfigError("threshold_metric must be balanced_accuracy, f1 or youden")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs and batch_size must be >= 1 and lr > 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("label_smoothing must be in [0, 1)")
        if not 0 <= self.freeze_epochs <= self.epochs:
            raise ConfigError("freeze_epochs must be between 0 and epochs")
        if self.finetune_lr_scale <= 0 or self.backbone_lr_scale < 0:
            raise ConfigError("finetune_lr_scale must be > 0 and backbone_lr_scale >= 0")
        if self.tta not in ("none", "flips", "dihedral"):
            raise ConfigError(f"unknown tta {self.tta!r}; use none, flips or dihedral")
        if self.stain_augment not in STAIN_AUGMENTS:
            raise ConfigError(
                f"unknown stain_augment {self.stain_augment!r}; "
                f"use one of {', '.join(STAIN_AUGMENTS)}"
            )
        if not 0 <= self.stain_sigma < 1:
            raise ConfigError("stain_sigma must be in [0, 1)")
        if self.head not in ("linear", "svm"):
            raise ConfigError(f"unknown head {self.head!r}; use linear or svm")
        if not self.svm_c or any(c <= 0 for c in self.svm_c) or self.svm_max_train < 0:
            raise ConfigError("svm_c must be positive values and svm_max_train >= 0")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; raise :class:`ConfigError` when it is missing or not a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options")
    return data


def dump_yaml(path: str | Path, data: dict[str, Any]) -> None:
    """Write a mapping as YAML, atomically."""
    import yaml

    from breastpath.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
