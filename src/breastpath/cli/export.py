"""``breastpath export CHECKPOINT --format onnx --out model.onnx``."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("checkpoint")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False))
def command(checkpoint, fmt, out_path) -> None:
    """Export CHECKPOINT (run, file or `default`) for another runtime."""
    from breastpath.checkpoint import load_checkpoint
    from breastpath.export.onnx import export_checkpoint

    written = export_checkpoint(load_checkpoint(checkpoint), out_path)
    click.echo(f"wrote {written} and {written.with_suffix('.json')}")
