"""``breastpath probe``: a head on frozen embeddings, patient-level cross-validated."""

from __future__ import annotations

import click

from breastpath.choices import PROBE_HEADS
from breastpath.cli.options import FiniteFloat


@click.command("probe")
@click.argument("embeddings", type=click.Path(exists=True, file_okay=False))
@click.option("--head", type=click.Choice(PROBE_HEADS), default="linear", show_default=True)
@click.option(
    "--out", "out_dir", default=None, help="Output folder [default: EMBEDDINGS/probe-HEAD]."
)
@click.option("--folds", type=int, default=5, show_default=True, help="Patient-level CV folds.")
@click.option(
    "--val-frac",
    type=FiniteFloat(min=0, max=1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of each fold's training patients kept for validation (early stopping, threshold).",
)
@click.option(
    "--lr",
    type=FiniteFloat(min=0, min_open=True, max=10),
    default=3e-4,
    show_default=True,
    help="Linear head: AdamW lr.",
)
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--max-steps", type=int, default=12_500, show_default=True)
@click.option("--knn-k", type=int, default=20, show_default=True)
@click.option("--bootstrap", "n_boot", type=int, default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def command(
    embeddings: str,
    head: str,
    out_dir: str | None,
    folds: int,
    val_frac: float,
    lr: float,
    batch_size: int,
    max_steps: int,
    knn_k: int,
    n_boot: int,
    seed: int,
) -> None:
    """Fit a probe HEAD on EMBEDDINGS (from `breastpath embed`) with patient-level CV; save a
    checkpoint that predict, serve and slide use like any other."""
    from pathlib import Path

    from breastpath.experiments.probe import ProbeOptions, probe
    from breastpath.experiments.probe_checkpoint import format_probe_markdown

    options = ProbeOptions(
        head=head,
        lr=lr,
        batch_size=batch_size,
        max_steps=max_steps,
        patience_steps=max(1, max_steps // 10),
        knn_k=knn_k,
        seed=seed,
    )
    out = Path(out_dir) if out_dir else Path(embeddings) / f"probe-{head}"
    result = probe(
        embeddings,
        out,
        options=options,
        folds=folds,
        val_frac=val_frac,
        n_boot=n_boot,
        progress=lambda line: click.echo(line, err=True),
    )
    click.echo(format_probe_markdown(result))
    click.echo(f"checkpoint: {out / 'probe.json'}")
