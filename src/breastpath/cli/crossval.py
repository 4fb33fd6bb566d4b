"""``breastpath crossval --data DIR --out DIR``: patient-level K-fold cross-validation.

Takes every training option of ``breastpath train`` (``--seed`` is the training seed; the folds
have their own ``--split-seed``).
"""

from __future__ import annotations

import click

from breastpath.choices import PATIENT_REDUCES
from breastpath.cli.options import FiniteFloat
from breastpath.cli.train import train_config, training_options

#: A probability: finite, in [0, 1].
_PROBABILITY = FiniteFloat(min=0, max=1)


def _threshold(value: str) -> str | float:
    """``'fold'`` or a finite probability (``nan``, ``inf`` and 1.5 are usage errors)."""
    if value == "fold":
        return value
    try:
        return float(_PROBABILITY.convert(value, None, None))
    except click.BadParameter:
        raise click.BadParameter(
            f"give 'fold' or a probability in [0, 1] such as 0.5, not {value!r}",
            param_hint="'--threshold'",
        ) from None


@click.command("crossval")
@click.option("--data", "data_dir", required=True, help="A folder written by `breastpath prepare`.")
@click.option("--out", "out_dir", required=True, help="Folder for crossval.json/.md and folds.")
@click.option("--folds", type=int, default=5, show_default=True, help="Number of patient folds.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of the folds.")
@click.option(
    "--val-frac",
    type=FiniteFloat(min=0, max=1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of each fold's training patients used for validation.",
)
@click.option(
    "--threshold",
    default="fold",
    show_default=True,
    help="'fold' (each fold's validation-chosen threshold) or a fixed probability.",
)
@click.option(
    "--reduce",
    type=click.Choice(PATIENT_REDUCES),
    default="mean",
    show_default=True,
    help="Patient score from image scores.",
)
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap replicates.")
@training_options
@click.option("--resume", is_flag=True, help="Reuse folds already finished in --out.")
def command(
    data_dir,
    out_dir,
    config_file,
    folds,
    split_seed,
    val_frac,
    threshold,
    reduce,
    n_boot,
    input_size,
    preset,
    resume,
    **flags,
) -> None:
    """Train a config once per patient fold and report pooled out-of-fold metrics with CIs."""
    from pathlib import Path

    from breastpath.experiments.crossval import cross_validate

    config = train_config(flags, config_file=config_file, input_size=input_size, preset=preset)
    result = cross_validate(
        data_dir,
        out_dir,
        config,
        folds=folds,
        seed=split_seed,
        val_frac=val_frac,
        threshold=_threshold(threshold),
        reduce=reduce,
        n_boot=n_boot,
        resume=resume,
    )
    for level in ("image", "patient"):
        block = result["pooled"][level]
        parts = []
        for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
            value = block.get(metric)
            low, high = block.get("ci95", {}).get(metric, (None, None))
            text = "n/a" if value is None else f"{value:.4f}"
            if low is not None:
                text += f" [{low:.3f}, {high:.3f}]"
            parts.append(f"{metric} {text}")
        click.echo(f"pooled {level} (n={block['n']}): " + ", ".join(parts))
    click.echo(f"wrote {Path(out_dir) / 'crossval.md'}")
