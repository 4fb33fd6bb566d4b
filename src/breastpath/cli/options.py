"""Command-line options shared by several commands."""

from __future__ import annotations

import click

#: ``--checkpoint`` of the commands that score images with one model (serve, mosaic, slide).
checkpoint_option = click.option(
    "--checkpoint",
    default="default",
    show_default=True,
    help="Model: a bundled name (`default`, `breakhis`, ...), a run folder or a checkpoint file.",
)
