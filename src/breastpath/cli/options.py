"""Command-line options shared by several commands.

* :func:`checkpoint_option`: ``--checkpoint``, how every command is given its model, and
  :func:`checkpoint_from` for the positional form of earlier versions (still accepted, with a
  warning, for one release).
* :class:`FiniteFloat`: a float option that refuses ``nan`` and ``inf`` (click's ``FloatRange``
  lets both through: every comparison with ``nan`` is false).
* :func:`config_options`: the training options of ``train`` and ``crossval`` (and the budget of
  ``compare``), generated from the fields of :class:`breastpath.config.TrainConfig`: their type
  (a ``Literal`` from :mod:`breastpath.choices` becomes a ``click.Choice``) and ``help``
  metadata. A new config field is a new flag, with no edit here.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click

from breastpath.choices import RUNTIMES
from breastpath.config import option_fields, option_type

#: Flat options that are not flags: mappings and tuples have their own (``--input-size``).
NOT_FLAGS = frozenset({"model_args"})

CHECKPOINT_HELP = (
    "Model: a bundled name (`default`, `breakhis`, ...), a run folder, a checkpoint file or an "
    "exported .onnx file."
)


class FiniteFloat(click.FloatRange):
    """A ``click.FloatRange`` that is also finite: ``nan`` and ``inf`` are usage errors.

    >>> FiniteFloat(min=0, min_open=True, max=60).convert("2.5", None, None)
    2.5
    >>> FiniteFloat(min=0, min_open=True).convert("nan", None, None)
    Traceback (most recent call last):
    ...
    click.exceptions.BadParameter: 'nan' is not a finite number.
    """

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _finite(hint: Any) -> Any:
    """The click type of a config field: :class:`FiniteFloat` for a float (the config's own
    ``validate`` checks its range), the hint itself otherwise."""
    return FiniteFloat() if hint is float else hint


def checkpoint_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--checkpoint`` (default: the bundled ``default`` model)."""
    return click.option("--checkpoint", default="default", show_default=True, help=CHECKPOINT_HELP)(
        command
    )


def checkpoint_from(command_name: str, option: str | None, positional: str | None) -> str:
    """The checkpoint of a command that used to take it as a positional argument.

    ``option`` is ``--checkpoint`` (``None`` when not given), ``positional`` the deprecated
    positional form; the positional one still works for one release, with a warning on stderr.
    """
    if positional is not None:
        if option is not None:
            raise click.UsageError("give the checkpoint once, with --checkpoint")
        click.echo(
            f"warning: `breastpath {command_name} CHECKPOINT` is deprecated and will be removed "
            f"in the next release; use `breastpath {command_name} --checkpoint {positional}`",
            err=True,
        )
        return positional
    return option if option is not None else "default"


def optional_checkpoint_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--checkpoint`` without a click default, for commands that also accept the deprecated
    positional form (:func:`checkpoint_from` resolves the two)."""
    return click.option("--checkpoint", default=None, help=f"{CHECKPOINT_HELP} [default: default]")(
        command
    )


def split_legacy_checkpoint(
    command_name: str, option: str | None, paths: Sequence[str]
) -> tuple[str, tuple[str, ...]]:
    """``(checkpoint, paths)`` of a command whose first positional argument used to be the
    checkpoint (``predict CHECKPOINT PATH...``): without ``--checkpoint``, a first argument that
    is a checkpoint and not an image is still read as one, with a deprecation warning."""
    paths = tuple(paths)
    if option is None and len(paths) >= 2 and looks_like_checkpoint(paths[0]):
        return checkpoint_from(command_name, None, paths[0]), paths[1:]
    return (option if option is not None else "default"), paths


def looks_like_checkpoint(text: str) -> bool:
    """Whether ``text`` names a checkpoint rather than an image or a folder of images: a
    bundled name, a ``.json``/``.onnx``/``.safetensors`` file, or a run folder."""
    from pathlib import Path

    from breastpath.checkpoint import BUNDLED

    path = Path(text)
    if path.is_dir():
        return (path / "best.json").is_file() or (path / "last.json").is_file()
    if path.suffix.lower() in (".json", ".onnx", ".safetensors"):  # never an image, even absent
        return True
    return text in BUNDLED and not path.exists()


def flag_name(key: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + key.replace("_", "-")


def config_option(key: str, **overrides: Any) -> Callable[[Callable[..., Any]], Any]:
    """The click option of the flat config option ``key`` (default ``None``: "not given", so
    that a config file or a preset can fill it); ``overrides`` replace click arguments."""
    item, hint = option_fields()[key], option_type(key)
    options: dict[str, Any] = {"default": None, "help": item.metadata.get("help", "")}
    declarations = [flag_name(key)]
    if hint is bool:
        declarations = [f"{flag_name(key)}/--no-{key.replace('_', '-')}"]
    elif typing.get_origin(hint) is typing.Literal:
        options["type"] = click.Choice(typing.get_args(hint))
    elif typing.get_origin(hint) is tuple:
        item_type = typing.get_args(hint)[0]
        options.update(type=_finite(item_type), multiple=True, default=())
        options["help"] += " Repeat for several."
    else:
        options["type"] = _finite(hint)
    if "default" in overrides and "show_default" not in overrides:
        overrides["show_default"] = True
    options.update(overrides)
    return click.option(*declarations, key, **options)


def config_options(keys: Iterable[str] | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Every flat config option (or those of ``keys``) as click options, in config order."""
    chosen = [k for k in (keys or option_fields()) if k not in NOT_FLAGS]

    def decorate(command: Callable[..., Any]) -> Any:
        for key in reversed(chosen):
            command = config_option(key)(command)
        return command

    return decorate


def given(flags: dict[str, Any]) -> dict[str, Any]:
    """The config options given on the command line (not ``None``, not an empty repeat)."""
    keys = set(option_fields()) - NOT_FLAGS
    return {k: v for k, v in flags.items() if k in keys and v is not None and v != ()}


#: ``--runtime`` of the commands that score images (predict, serve).
runtime_option = click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=None,
    help="torch; onnx (onnxruntime on the CPU; needs the `onnx` extra); or int8 (the "
    "checkpoint's attached quantized network, see `breastpath quantize`). Default: the "
    "checkpoint's own (int8 for the bundled default, onnx for an exported .onnx file). "
    "Grad-CAM needs the torch weights.",
)
