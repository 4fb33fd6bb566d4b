"""``breastpath quantize --checkpoint RUN --data PREPARED --out DIR/model``: a copy of a checkpoint
with an int8 network attached (runtime ``int8``), calibrated on patches it was trained on."""

from __future__ import annotations

import logging

import click

from breastpath.choices import EVAL_SPLITS
from breastpath.cli.options import checkpoint_option


def _not_onnxruntime(record: logging.LogRecord) -> bool:
    return "onnxruntime" not in record.pathname


@click.command("quantize")
@checkpoint_option
@click.option(
    "--data",
    "prepared",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Prepared folder whose patches set the activation ranges (the model's training data).",
)
@click.option(
    "--split",
    type=click.Choice(EVAL_SPLITS),
    default="train",
    show_default=True,
    help="Which rows calibrate: never the patients the model will be judged on.",
)
@click.option("--samples", type=int, default=1024, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out_stem", required=True, type=click.Path(dir_okay=False))
def command(checkpoint, prepared, split, samples, seed, out_stem) -> None:
    """Quantize --checkpoint to int8 (onnxruntime, static, per channel) into --out.

    Writes OUT.json, OUT.safetensors (the float weights, for Grad-CAM) and the int8 ONNX file
    beside them; `predict`, `serve` and `evaluate` then score with it (`--runtime torch` still
    runs the float network). Measure its accuracy: it is not the float model.
    """
    import numpy as np

    from breastpath.data.cache import open_prepared
    from breastpath.inference.predictor import Predictor
    from breastpath.inference.quantize import calibration_rows, quantized_copy

    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    data = open_prepared(prepared)
    rows = data.indices(split)
    if len(rows) == 0:
        raise click.UsageError(f"{prepared}: the {split} split is empty")
    chosen = calibration_rows(rows, samples=samples, seed=seed)
    images = predictor.cache_input(np.asarray(data.images[chosen]), data.meta)
    for handler in logging.getLogger().handlers:  # onnxruntime logs every rescaled bias
        handler.addFilter(_not_onnxruntime)
    written = quantized_copy(
        predictor.checkpoint,
        out_stem,
        images=images,
        source=f"{data.meta.get('dataset', 'prepared')} {split} split, {len(rows):,} patches",
        samples=samples,
        seed=seed,
    )
    click.echo(f"wrote {written} (runtime int8)")
    from breastpath.inference import onnx

    if not onnx.int8_kernels_exact():
        click.echo(f"note: {onnx.INT8_FALLBACK_NOTE}; on a CPU with VNNI the int8 network serves")
