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
@click.option(
    "--network",
    type=click.Choice(["float", "int8"]),
    default="float",
    show_default=True,
    help="The float network, or the int8 copy the checkpoint serves (runtime int8, e.g. the "
    "bundled default).",
)
def command(positional, checkpoint, out_path, fmt, network) -> None:
    """Export --checkpoint (run, file or `default`) to ONNX.

    The graph has two outputs: `logits` and `probabilities` (the checkpoint's calibration,
    softmax((logits + logit_bias) / temperature), in the graph: what breastpath reports). The
    checkpoint as a first argument (`export RUN ...`) is deprecated: use --checkpoint.
    """
    from breastpath.checkpoint import load_checkpoint
    from breastpath.export.onnx import export_checkpoint

    if fmt is not None:
        click.echo("warning: --format is deprecated (ONNX is the only format)", err=True)
    checkpoint = checkpoint_from("export", checkpoint, positional)
    loaded = load_checkpoint(checkpoint)
    written = export_checkpoint(loaded, out_path, network=network)
    served = loaded.meta.runtime
    click.echo(
        f"wrote {written} and {written.with_suffix('.json')}: the {network} network "
        f"(this checkpoint serves runtime {served}); outputs logits and calibrated probabilities"
    )
