"""``TrainConfig``: the sections of a training run, and the flat option names (command-line
flags, and the one mapping earlier versions wrote) that read into them."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from breastpath.config._base import _Config, _help
from breastpath.config.sections import (
    AugmentConfig,
    DistillConfig,
    HeadConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    StopConfig,
)
from breastpath.errors import ConfigError

#: The sections of a :class:`TrainConfig`, by attribute name.
SECTIONS: dict[str, type[_Config]] = {
    "model": ModelConfig,
    "optim": OptimConfig,
    "augment": AugmentConfig,
    "stop": StopConfig,
    "head": HeadConfig,
    "distill": DistillConfig,
    "runtime": RuntimeConfig,
}
#: Flat names that differ from their field's name: ``(section, field) -> flat name``.
RENAMED: dict[tuple[str, str], str] = {
    ("model", "name"): "model",
    ("model", "args"): "model_args",
    ("augment", "enabled"): "augment",
    ("head", "kind"): "head",
    ("distill", "teachers"): "teacher",
    ("distill", "weight"): "distill_weight",
    ("distill", "temperature"): "distill_temperature",
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
    distill: DistillConfig = field(default_factory=DistillConfig)
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
        if self.distill.teachers and self.head.kind != "linear":
            raise ConfigError("a teacher (distillation) needs the linear head")

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
