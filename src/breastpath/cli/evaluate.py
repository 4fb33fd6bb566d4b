"""``breastpath evaluate --checkpoint CHECKPOINT --data DIR [--split test] --out DIR``."""

from __future__ import annotations

import click

from breastpath.choices import EVAL_SPLITS
from breastpath.cli.options import checkpoint_from, optional_checkpoint_option


@click.command("evaluate")
@click.argument("positional", metavar="[CHECKPOINT]", required=False)
@optional_checkpoint_option
@click.option(
    "--data",
    "data",
    required=True,
    help="A prepared folder (its split is used) or a raw source (all images).",
)
@click.option("--split", type=click.Choice(EVAL_SPLITS), default="test", show_default=True)
@click.option("--out", "out_dir", required=True, help="Folder for metrics.json and report.html.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--allow-non-tissue",
    is_flag=True,
    help="RESEARCH ONLY: also label and count images the input-quality gate flags as not "
    "tissue / not H&E.",
)
def command(positional, checkpoint, data, split, out_dir, batch_size, allow_non_tissue) -> None:
    """Evaluate --checkpoint (run folder, file or `default`) on a split, per patch and patient.

    The checkpoint as a first argument (`evaluate RUN ...`) is deprecated: use --checkpoint.
    """
    from breastpath.evaluate.pipeline import evaluate_checkpoint

    checkpoint = checkpoint_from("evaluate", checkpoint, positional)
    result = evaluate_checkpoint(
        checkpoint,
        data,
        out_dir,
        split=split,
        batch_size=batch_size,
        allow_non_tissue=allow_non_tissue,
    )
    quality = result["quality"]
    if quality["not_assessed"]:
        click.echo(
            f"not assessed: {quality['not_assessed']} of {quality['images']} images "
            f"({quality['reasons']}; listed in {out_dir}/not_assessed.csv)",
            err=True,
        )
    m = result["patch"]
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    click.echo(
        f"patch    n={m['n']:<6d} balanced_accuracy={m['balanced_accuracy']:.4f} "
        f"f1={m['f1']:.4f} sensitivity={m['sensitivity']:.4f} "
        f"specificity={m['specificity']:.4f} roc_auc={auc}"
    )
    p = result["patient"]
    click.echo(
        f"patient  n={p['n']:<6d} ({p['positive_patients']} positive, "
        f"{p['negative_patients']} negative) presence: sensitivity={_num(p['sensitivity'])} "
        f"specificity={_num(p['specificity'])}; extent: mae={_num(p['extent_mae'])} "
        f"pearson_r={_num(p['extent_pearson_r'])} icc={_num(p['extent_icc'])}"
    )
    click.echo(f"patient verdict rule: {result['patient_verdict']['rule']}")
    for warning in result["patient_verdict"]["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"report: {out_dir}/report.html")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
