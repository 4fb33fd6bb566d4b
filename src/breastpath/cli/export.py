"""``breastpath export --checkpoint CHECKPOINT --out model.onnx``: an ONNX pair (``.onnx`` and its
``.json``) that ``predict``, ``serve`` and ``evaluate`` load like any checkpoint."""

from __future__ import annotations

import click

from breastpath.cli.options import checkpoint_from, optional_checkpoint_option


@click.command("export")
@click.argument("positional", metavar="[CHECKPOINT]", required=False)
@optional_checkpoint_option
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx"]),
    default=None,
    hidden=True,
    help="Deprecated: ONNX is the only format.",
)
def command(positional, checkpoint, out_path, fmt) -> None:
    """Export --checkpoint (run, file or `default`) to ONNX.

    The checkpoint as a first argument (`export RUN ...`) is deprecated: use --checkpoint.
    """
    from breastpath.checkpoint import load_checkpoint
    from breastpath.export.onnx import export_checkpoint

    if fmt is not None:
        click.echo("warning: --format is deprecated (ONNX is the only format)", err=True)
    checkpoint = checkpoint_from("export", checkpoint, positional)
    written = export_checkpoint(load_checkpoint(checkpoint), out_path)
    click.echo(f"wrote {written} and {written.with_suffix('.json')}")
