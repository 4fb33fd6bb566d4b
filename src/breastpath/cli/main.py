"""``breastpath``: prepare, train, evaluate, predict and serve.

Every library error, every operating-system error (an unwritable output, a full disk) and every
usage error (a bad option value, a missing argument) becomes a one-line ``error: ...`` message and
exit status 2; nothing prints a traceback unless ``--debug`` is given. Third-party loggers that
narrate what the library then reports itself (tifffile's, on a file that is not a slide) are
silenced unless ``-vv`` or ``--debug``.
"""

from __future__ import annotations

import logging
import sys

import click

from breastpath import __version__
from breastpath.errors import BreastpathError


class _Group(click.Group):
    """Turn library errors into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BreastpathError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except OSError as exc:  # an unwritable --out, a full disk, an unreadable file
            if ctx.obj and ctx.obj.get("debug"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="breastpath")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """Find cancer in breast histopathology images."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.DEBUG if verbose > 1 or debug else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if level > logging.DEBUG:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)


#: Loggers of libraries whose failures the CLI reports itself, in its one ``error:`` line.
QUIET_LOGGERS = ("tifffile",)


#: Subcommand modules of ``breastpath.cli``, in help order; each exposes a click ``command``.
COMMANDS = (
    "prepare",
    "train",
    "evaluate",
    "predict",
    "serve",
    "export",
    "quantize",
    "mosaic",
    "slide",
    "compare",
    "stain",
    "crossval",
    "embed",
    "probe",
    "models",
)


def _register() -> None:
    import importlib

    for name in COMMANDS:
        cli.add_command(importlib.import_module(f"breastpath.cli.{name}").command)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    _register()
    try:
        code = cli.main(args=argv, prog_name="breastpath", standalone_mode=False)
    except click.ClickException as exc:  # a usage error: one line, not click's three
        click.echo(f"error: {_usage_message(exc)}", err=True)
        return exc.exit_code
    except click.Abort:  # Ctrl+C or end of input at a prompt
        click.echo("aborted", err=True)
        return 1
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return code if isinstance(code, int) else 0


def _usage_message(exc: click.ClickException) -> str:
    """Click's message with where to read more (its usage line and hint are dropped)."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{exc.format_message()}{where}"


if __name__ == "__main__":
    sys.exit(main())
