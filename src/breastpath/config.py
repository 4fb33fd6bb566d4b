"""Configuration dataclasses, saved with every run and inside every checkpoint.

A training run is described by a :class:`TrainConfig` made of small frozen sections, each with
one job:

=============  ===========================  =====================================================
section        class                        fields
=============  ===========================  =====================================================
``model``      :class:`ModelConfig`         which network, its arguments, its starting weights,
                                            test-time augmentation
``optim``      :class:`OptimConfig`         optimizer, batch, schedule, loss shaping, fine-tuning
``augment``    :class:`AugmentConfig`       training-time colour and stain augmentation
``stop``       :class:`StopConfig`          epoch budget, early stopping, threshold criterion
``head``       :class:`HeadConfig`          linear head, or an RBF SVM on embeddings
``runtime``    :class:`RuntimeConfig`       where and how it runs (device, threads, AMP, ...)
=============  ===========================  =====================================================

plus the run's ``seed``. Everything but ``runtime`` decides the trained weights and is what a
checkpoint records as its ``train`` block (:meth:`TrainConfig.training_dict`); the runtime is
written next to it in a run's ``config.yaml`` only.

Every option also has a *flat* name (``lr``, ``epochs``, ``stain_augment``, ...): the
command-line flag (``--lr``), and the key of configs and checkpoints written by earlier
versions, which kept all options in one mapping. :data:`FLAT_KEYS` maps flat names to
``(section, field)``; a field's flat name is its own name except for :data:`RENAMED`.
:meth:`TrainConfig.from_dict` reads either form, :meth:`TrainConfig.from_flat` builds one from
flat options. The command-line options of ``train`` and ``crossval`` are generated from these
fields (their ``help`` metadata), so adding an option is one edit here.

Every config converts to and from plain dicts and YAML files; unknown keys are refused so that a
typo in ``run.yaml`` is not silently ignored.

Examples
--------
>>> config = TrainConfig.from_flat(model="resnet18", lr=3e-4, epochs=5, device="cpu")
>>> config.model.name, config.optim.lr, config.stop.epochs, config.runtime.device
('resnet18', 0.0003, 5, 'cpu')
>>> "runtime" in config.training_dict()
False
>>> TrainConfig.from_dict(config.to_dict()) == config
True
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from breastpath.choices import (
    HEADS,
    MONITORS,
    OPTIMIZERS,
    SCHEDULES,
    STAIN_AUGMENTS,
    STAIN_METHODS,
    THRESHOLD_METRICS,
    TTA_MODES,
    Head,
    Monitor,
    Optimizer,
    Schedule,
    StainAugment,
    ThresholdMetric,
    TTAMode,
    check_choice,
)
from breastpath.errors import ConfigError

__all__ = [
    "FLAT_KEYS",
    "RENAMED",
    "STAIN_AUGMENTS",
    "STAIN_METHODS",
    "AugmentConfig",
    "DataConfig",
    "HeadConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "StopConfig",
    "TrainConfig",
    "dump_yaml",
    "flatten",
    "load_yaml",
]

T = TypeVar("T", bound="_Config")


def _help(text: str) -> dict[str, str]:
    """A field's metadata: its command-line help."""
    return {"help": text}


def _checked(name: str, value: Any, hint: Any) -> Any:
    """``value`` when it fits the field type ``hint`` (lists become tuples), else
    :class:`ConfigError` naming the option; choices are checked by ``validate``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = number
    elif hint is str:
        ok = isinstance(value, str)
    elif typing.get_origin(hint) is tuple:
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        )
        value = tuple(value) if ok else value
    elif typing.get_origin(hint) is dict:
        ok = isinstance(value, dict)
    else:  # a Literal: validate() names the allowed values
        ok = True
    if not ok:
        raise ConfigError(f"{name} must be a {_type_name(hint)}, got {value!r}")
    return float(value) if hint is float else value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "list of numbers"
    if origin is dict:
        return "mapping"
    return {bool: "boolean (true/false)", int: "integer", float: "number"}.get(hint, "string")


class _Config:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any] | None) -> T:
        data = dict(data or {})
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        for key, value in list(data.items()):
            data[key] = _checked(f"{cls.__name__}.{key}", value, hints[key])
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
    stain: str = "none"  # one of STAIN_METHODS
    stain_sample: int = 256  # training images (seeded sample) the target is fitted on

    def validate(self) -> None:
        check_choice(self.stain, STAIN_METHODS, what="stain method")
        if self.stain_sample < 1:
            raise ConfigError("stain_sample must be >= 1")
        if not 0 <= self.test_frac < 1 or not 0 <= self.val_frac < 1:
            raise ConfigError("test_frac and val_frac must be in [0, 1)")
        if self.image_size < 0 or self.image_size > 2048:
            raise ConfigError("image_size must be between 1 and 2048 (0 = from the data)")


@dataclass(frozen=True)
class ModelConfig(_Config):
    """The network: a registered model, its arguments and where its weights start from."""

    name: str = field(default="cancernet", metadata=_help("Model name (see `list_models`)."))
    args: dict[str, Any] = field(
        default_factory=dict, metadata=_help("Model arguments (stored in the checkpoint).")
    )
    pretrained: bool = field(
        default=False,
        metadata=_help(
            "Start from offline ImageNet weights (installed packages; never downloaded)."
        ),
    )
    weights: str = field(
        default="", metadata=_help("Local state dict (timm/torchvision) to start from.")
    )
    tta: TTAMode = field(
        default="none", metadata=_help("Test-time augmentation stored in the checkpoint.")
    )

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("model must be a model name")
        if not isinstance(self.args, dict):
            raise ConfigError("model_args must be a mapping")
        check_choice(self.tta, TTA_MODES, what="tta")


@dataclass(frozen=True)
class OptimConfig(_Config):
    """Optimizer, batch, learning-rate schedule, loss shaping and two-stage fine-tuning
    (:mod:`breastpath.train.finetune`)."""

    optimizer: Optimizer = field(default="adagrad", metadata=_help("Optimizer."))
    lr: float = field(
        default=0.01, metadata=_help("Learning rate (of the head, with fine-tuning scales).")
    )
    momentum: float = field(default=0.9, metadata=_help("SGD momentum (Nesterov)."))
    weight_decay: float = field(default=0.0, metadata=_help("Weight decay."))
    batch_size: int = field(
        default=64,
        metadata=_help("The global batch: under torchrun each of N processes takes batch/N rows."),
    )
    schedule: Schedule = field(
        default="cosine", metadata=_help("Learning-rate schedule after the warm-up.")
    )
    warmup_epochs: int = field(default=0, metadata=_help("Epochs of linear learning-rate warm-up."))
    label_smoothing: float = field(
        default=0.0, metadata=_help("Label smoothing of the cross-entropy.")
    )
    class_weights: bool = field(
        default=True, metadata=_help("Weight the loss by inverse class frequency.")
    )
    freeze_epochs: int = field(
        default=0, metadata=_help("Epochs training only the head (backbone frozen).")
    )
    finetune_lr_scale: float = field(
        default=1.0, metadata=_help("lr factor after the frozen epochs.")
    )
    backbone_lr_scale: float = field(default=1.0, metadata=_help("Backbone lr / head lr."))

    def validate(self) -> None:
        check_choice(self.optimizer, OPTIMIZERS, what="optimizer")
        check_choice(self.schedule, SCHEDULES, what="schedule")
        if self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("batch_size must be >= 1 and lr > 0")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ConfigError("warmup_epochs and weight_decay must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("label_smoothing must be in [0, 1)")
        if self.finetune_lr_scale <= 0 or self.backbone_lr_scale < 0:
            raise ConfigError("finetune_lr_scale must be > 0 and backbone_lr_scale >= 0")


@dataclass(frozen=True)
class AugmentConfig(_Config):
    """Training-time augmentation (:func:`breastpath.data.augment.augment_batch`)."""

    enabled: bool = field(
        default=True, metadata=_help("Flips, rotations and colour jitter while training.")
    )
    color_jitter: float = field(default=0.05, metadata=_help("Strength of the colour jitter."))
    stain_augment: StainAugment = field(
        default="none",
        metadata=_help(
            "H&E stain augmentation: hed jitter, or Tellez concentration perturbation with each "
            "image's stains from ruifrok (fixed), macenko or vahadane."
        ),
    )
    stain_sigma: float = field(
        default=0.0,
        metadata=_help(
            "Stain augmentation strength (0: the method's default, 0.05 hed, else 0.2)."
        ),
    )
    background_frac: float = field(
        default=0.0,
        metadata=_help(
            "Share of each batch replaced by tissue-free frames labelled non-cancer, and, "
            "independently, given a white edge band (breastpath.data.augment.add_background)."
        ),
    )

    def validate(self) -> None:
        check_choice(self.stain_augment, STAIN_AUGMENTS, what="stain_augment")
        if not 0 <= self.background_frac <= 0.5:
            raise ConfigError("background_frac must be in [0, 0.5]")
        if not 0 <= self.stain_sigma < 1:
            raise ConfigError("stain_sigma must be in [0, 1)")
        if self.color_jitter < 0:
            raise ConfigError("color_jitter must be >= 0")


@dataclass(frozen=True)
class StopConfig(_Config):
    """The epoch budget, early stopping and how the decision threshold is chosen."""

    epochs: int = field(default=40, metadata=_help("Epochs at most."))
    max_steps_per_epoch: int = field(
        default=0, metadata=_help("Batches per epoch at most (0: the whole split).")
    )
    patience: int = field(
        default=8, metadata=_help("Stop after this many epochs without improvement.")
    )
    min_delta: float = field(
        default=1e-4, metadata=_help("Smallest change that counts as an improvement.")
    )
    monitor: Monitor = field(
        default="val_loss", metadata=_help("What early stopping and `best` follow.")
    )
    threshold_metric: ThresholdMetric = field(
        default="balanced_accuracy",
        metadata=_help("What the validation-chosen threshold maximises."),
    )

    def validate(self) -> None:
        check_choice(self.monitor, MONITORS, what="monitor")
        check_choice(self.threshold_metric, THRESHOLD_METRICS, what="threshold_metric")
        if self.epochs < 1:
            raise ConfigError("epochs must be >= 1")
        if self.max_steps_per_epoch < 0 or self.patience < 1:
            raise ConfigError("max_steps_per_epoch must be >= 0 and patience >= 1")


@dataclass(frozen=True)
class HeadConfig(_Config):
    """The classifier: trained end to end, or an RBF SVM on embeddings
    (:mod:`breastpath.train.hybrid`)."""

    kind: Head = field(
        default="linear", metadata=_help("svm: an RBF SVM on the backbone's embeddings.")
    )
    backbone_checkpoint: str = field(
        default="", metadata=_help("svm head: embed with this trained checkpoint.")
    )
    svm_c: tuple[float, ...] = field(
        default=(0.1, 1.0, 10.0),
        metadata=_help("svm head: C values tried; the best on validation wins."),
    )
    svm_max_train: int = field(
        default=4000, metadata=_help("svm head: at most this many training embeddings (0: all).")
    )

    def validate(self) -> None:
        check_choice(self.kind, HEADS, what="head")
        if not self.svm_c or any(c <= 0 for c in self.svm_c) or self.svm_max_train < 0:
            raise ConfigError("svm_c must be positive values and svm_max_train >= 0")


@dataclass(frozen=True)
class RuntimeConfig(_Config):
    """Where and how a run executes; not a training choice, so not saved in checkpoints."""

    device: str = field(default="auto", metadata=_help("auto, cpu or cuda[:N]."))
    num_threads: int = field(default=0, metadata=_help("torch threads (0: torch's default)."))
    amp: bool = field(default=True, metadata=_help("Mixed precision on CUDA."))
    compile: bool = field(default=False, metadata=_help("torch.compile the training step."))
    eval_batch_size: int = field(default=256, metadata=_help("Batch size of validation scoring."))
    progress: bool = field(default=True, metadata=_help("Show progress bars."))

    def validate(self) -> None:
        if self.num_threads < 0 or self.eval_batch_size < 1:
            raise ConfigError("num_threads must be >= 0 and eval_batch_size >= 1")


#: The sections of a :class:`TrainConfig`, by attribute name.
SECTIONS: dict[str, type[_Config]] = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "augment": AugmentConfig,
    "stop": StopConfig,
    "head": HeadConfig,
    "runtime": RuntimeConfig,
}
#: Flat names that differ from their field's name: ``(section, field) -> flat name``.
RENAMED: dict[tuple[str, str], str] = {
    ("model", "name"): "model",
    ("model", "args"): "model_args",
    ("augment", "enabled"): "augment",
    ("head", "kind"): "head",
}


def _flat_keys() -> dict[str, tuple[str, str]]:
    keys = {"seed": ("", "seed")}
    for section, cls in SECTIONS.items():
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            keys[RENAMED.get((section, item.name), item.name)] = (section, item.name)
    return keys


#: Flat option name -> ``(section, field)``; ``("", "seed")`` for the top-level seed.
FLAT_KEYS: dict[str, tuple[str, str]] = _flat_keys()


def flatten(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The flat options of a train config in either form, only the keys it gives.

    A section name whose value is a mapping (``{"optim": {"lr": 0.1}}``) is the nested form;
    anything else is a flat option (``{"lr": 0.1}``, the form of earlier versions). Unknown
    keys raise :class:`ConfigError`.

    Examples
    --------
    >>> flatten({"model": {"name": "resnet18"}, "optim": {"lr": 0.1}, "epochs": 3})
    {'model': 'resnet18', 'lr': 0.1, 'epochs': 3}
    """
    flat: dict[str, Any] = {}
    for key, value in (data or {}).items():
        if key in SECTIONS and isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(SECTIONS[key])}  # type: ignore[arg-type]
            unknown = sorted(set(value) - names)
            if unknown:
                raise ConfigError(f"unknown {key} option(s): {', '.join(unknown)}")
            flat.update({RENAMED.get((key, str(k)), str(k)): v for k, v in value.items()})
        elif key in FLAT_KEYS:
            flat[key] = value
        else:
            raise ConfigError(f"unknown TrainConfig option {key!r}")
    return flat


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (``breastpath train``), in sections; see the
    module docstring."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = field(
        default=0, metadata=_help("Seed of the initial weights, the shuffling and augmentation.")
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for section in SECTIONS:
            getattr(self, section).validate()
        if not 0 <= self.optim.freeze_epochs <= self.stop.epochs:
            raise ConfigError("freeze_epochs must be between 0 and epochs")

    @classmethod
    def from_flat(cls, values: Mapping[str, Any] | None = None, /, **options: Any) -> TrainConfig:
        """A config from flat options (``lr=0.1``); unset options keep their defaults."""
        merged = {**(values or {}), **options}
        unknown = sorted(set(merged) - set(FLAT_KEYS))
        if unknown:
            raise ConfigError(f"unknown TrainConfig option(s): {', '.join(unknown)}")
        parts: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        seed = merged.pop("seed", 0)
        for key, value in merged.items():
            section, name = FLAT_KEYS[key]
            parts[section][name] = value
        sections = {name: SECTIONS[name].from_dict(parts[name]) for name in SECTIONS}
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        return cls(**sections, seed=seed)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainConfig:
        """Read the nested form (:meth:`to_dict`), the flat form of earlier versions (a
        checkpoint's ``train`` block, an old ``config.yaml``), or a mix of both."""
        return cls.from_flat(flatten(data))

    def to_dict(self) -> dict[str, Any]:
        """The nested form, runtime included (``from_dict(to_dict())`` round-trips)."""
        out: dict[str, Any] = {"seed": self.seed}
        out.update({name: getattr(self, name).to_dict() for name in SECTIONS})
        return out

    def training_dict(self) -> dict[str, Any]:
        """The nested form without ``runtime``: the training choices a checkpoint records."""
        out = self.to_dict()
        del out["runtime"]
        return out

    def to_flat(self) -> dict[str, Any]:
        """Every option under its flat name."""
        return flatten(self.to_dict())

    def with_options(self, **changes: Any) -> TrainConfig:
        """A validated copy with flat options changed (``with_options(epochs=3)``)."""
        return TrainConfig.from_flat({**self.to_flat(), **changes})


def _field(section: str, name: str) -> dataclasses.Field[Any]:
    cls: Any = TrainConfig if not section else SECTIONS[section]
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def option_fields() -> dict[str, dataclasses.Field[Any]]:
    """Flat option name -> its dataclass field (with its ``help`` metadata), in order."""
    return {key: _field(section, name) for key, (section, name) in FLAT_KEYS.items()}


def option_type(key: str) -> Any:
    """The resolved type annotation of the flat option ``key`` (``Literal[...]`` for choices).

    Examples
    --------
    >>> option_type("lr"), typing.get_args(option_type("tta"))
    (<class 'float'>, ('none', 'flips', 'dihedral'))
    """
    section, name = FLAT_KEYS[key]
    cls = TrainConfig if not section else SECTIONS[section]
    return typing.get_type_hints(cls)[name]


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
