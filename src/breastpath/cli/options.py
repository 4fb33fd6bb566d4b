"""Command-line options shared by several commands."""

from __future__ import annotations

import click

from breastpath.choices import RUNTIMES

#: ``--checkpoint`` of the commands that score images with one model (serve, mosaic, slide).
checkpoint_option = click.option(
    "--checkpoint",
    default="default",
    show_default=True,
    help="Model: a bundled name (`default`, `breakhis`, ...), a run folder or a checkpoint file.",
)

#: ``--runtime`` of the commands that score images (predict, serve).
runtime_option = click.option(
    "--runtime",
    type=click.Choice(RUNTIMES),
    default=None,
    help="torch, or onnx (onnxruntime on the CPU; needs the `onnx` extra). Default: the "
    "checkpoint's own (onnx for an exported .onnx file). Grad-CAM needs the torch weights.",
)
