"""The base of every config: dict and YAML I/O, type checks that name the option."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from breastpath.errors import ConfigError

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
        strings = typing.get_args(hint)[0] is str
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, str)
            if strings
            else isinstance(v, (int, float)) and not isinstance(v, bool)
            for v in value
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
        return "list of strings" if typing.get_args(hint)[0] is str else "list of numbers"
    if origin is dict:
        return "mapping"
    return {bool: "boolean (true/false)", int: "integer", float: "number"}.get(hint, "string")


def check_finite(owner: str, name: str, value: Any) -> None:
    """Raise :class:`ConfigError` when ``value`` is (or holds) a float that is not finite:
    ``nan`` passes every range check written as a comparison (``nan <= 0`` is false).

    Examples
    --------
    >>> check_finite("OptimConfig", "lr", 0.1)
    >>> check_finite("OptimConfig", "lr", float("nan"))
    Traceback (most recent call last):
    ...
    breastpath.errors.ConfigError: OptimConfig.lr must be a finite number, got nan
    """
    values = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise ConfigError(f"{owner}.{name} must be a finite number, got {value!r}")


class _Config:
    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):  # type: ignore[arg-type]
            check_finite(type(self).__name__, spec.name, getattr(self, spec.name))

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


#: The key by which a recipe names the YAML it builds on (a path relative to its own folder).
EXTENDS_KEY = "extends"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; raise :class:`ConfigError` when it is missing or not a mapping.

    A mapping with ``extends: base.yaml`` builds on that file (relative to its own folder):
    its options are merged over the base's, mappings key by key (:func:`merge_options`), so a
    recipe that differs from another in a seed or two options says only those.
    """
    return _load_yaml(Path(path), seen=())


def _load_yaml(path: Path, *, seen: tuple[Path, ...]) -> dict[str, Any]:
    import yaml

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
    base_name = data.pop(EXTENDS_KEY, None)
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ConfigError(f"{path}: {EXTENDS_KEY} must name a YAML file, got {base_name!r}")
    base_path = (path.parent / base_name).resolve()
    chain = (*seen, path.resolve())
    if base_path in chain:
        raise ConfigError(f"{path}: {EXTENDS_KEY} loops back to {base_path.name}")
    return merge_options(_load_yaml(base_path, seen=chain), data)


def merge_options(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``; where both hold a mapping, merged key by key.

    >>> merge_options({"lr": 0.1, "model_args": {"input_size": 80}},
    ...               {"seed": 1, "model_args": {"drop_rate": 0.2}})
    {'lr': 0.1, 'model_args': {'input_size': 80, 'drop_rate': 0.2}, 'seed': 1}
    """
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_yaml(path: str | Path, data: dict[str, Any]) -> None:
    """Write a mapping as YAML, atomically."""
    import yaml

    from breastpath.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
