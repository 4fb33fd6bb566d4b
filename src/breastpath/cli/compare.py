"""``breastpath compare --data DIR --models A,B,... --out DIR``.

The budget options (``--epochs``, ``--batch-size``, ``--tta``, ...) are the training options of
:class:`breastpath.config.TrainConfig`, with the comparison's defaults
(:class:`breastpath.experiments.compare.Budget`, checked by a test).
"""

from __future__ import annotations

import click

from breastpath.cli.options import config_option


def _weights(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"expected MODEL=PATH, got {value!r}", param_hint="--weights")
        pairs[name.strip()] = path.strip()
    return pairs


@click.command("compare")
@click.option("--data", "data_dir", required=True, help="A folder written by `breastpath prepare`.")
@click.option(
    "--models",
    default="cancernet,efficientnet_lite0",
    show_default=True,
    help="Comma-separated model names; svm:NAME is the CNN + SVM hybrid.",
)
@click.option("--out", "out_dir", required=True, help="Folder for runs and the comparison table.")
@config_option("epochs", default=3)
@config_option("max_steps_per_epoch", default=0)
@config_option("batch_size", default=64)
@click.option(
    "--input-size",
    type=int,
    default=96,
    show_default=True,
    help="Working side of timm backbones (0: each model's default).",
)
@click.option("--weights", multiple=True, help="MODEL=PATH: local weights for a backbone.")
@click.option("--baseline", multiple=True, help="Also score this checkpoint (e.g. default).")
@config_option("tta", default="none")
@config_option("seed", default=0, help="Training seed of every model.")
@config_option("device", default="auto")
@click.option(
    "--num-threads",
    "--threads",
    "threads",
    type=int,
    default=0,
    help="torch threads (0: torch's default).",
)
@click.option("--n-boot", type=int, default=1000, show_default=True)
def command(
    data_dir,
    models,
    out_dir,
    epochs,
    max_steps_per_epoch,
    batch_size,
    input_size,
    weights,
    baseline,
    tta,
    seed,
    device,
    threads,
    n_boot,
) -> None:
    """Train MODELS under one budget and split; write comparison.md and comparison.json."""
    from pathlib import Path

    from breastpath.experiments.compare import Budget, compare_models

    budget = Budget(
        epochs=epochs,
        max_steps_per_epoch=max_steps_per_epoch,
        batch_size=batch_size,
        input_size=input_size,
        seed=seed,
        device=device,
        num_threads=threads,
        tta=tta,
    )
    compare_models(
        data_dir,
        out_dir,
        models=models,
        budget=budget,
        weights=_weights(weights),
        baselines=baseline,
        n_boot=n_boot,
    )
    click.echo((Path(out_dir) / "comparison.md").read_text(encoding="utf-8"))
