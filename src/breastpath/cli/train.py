"""``breastpath train --data DIR --out RUN``."""

from __future__ import annotations

import click


@click.command("train")
@click.option("--data", "data_dir", required=True, help="A folder written by `breastpath prepare`.")
@click.option("--out", "run_dir", required=True, help="Run folder for checkpoints and history.")
@click.option("--config", "config_file", default=None, help="YAML file of training options.")
@click.option("--model", default=None, help="Model name [default: cancernet].")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--optimizer", type=click.Choice(["adagrad", "adam", "adamw", "sgd"]), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None, help="auto, cpu or cuda[:N].")
@click.option("--max-steps-per-epoch", type=int, default=None)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--resume", is_flag=True, help="Continue from RUN/last.json.")
def command(
    data_dir,
    run_dir,
    config_file,
    model,
    epochs,
    batch_size,
    lr,
    optimizer,
    seed,
    device,
    max_steps_per_epoch,
    no_progress,
    resume,
) -> None:
    """Train a classifier on a prepared folder (options: flags > --config file > defaults)."""
    from pathlib import Path

    from breastpath.config import TrainConfig, load_yaml
    from breastpath.train.loop import train

    values = {}
    if resume and config_file is None and (Path(run_dir) / "config.yaml").is_file():
        values.update(load_yaml(Path(run_dir) / "config.yaml").get("train", {}))
    if config_file:
        loaded = load_yaml(config_file)
        values.update(loaded.get("train", loaded))
    flags = {
        "model": model,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "seed": seed,
        "device": device,
        "max_steps_per_epoch": max_steps_per_epoch,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if no_progress:
        values["progress"] = False
    config = TrainConfig.from_dict(values)
    summary = train(data_dir, run_dir, config, resume=resume)
    val = summary.get("val", {})
    click.echo(
        f"best epoch {summary['best_epoch']} of {summary['epochs_run']}; threshold "
        f"{summary.get('threshold', 0.5):.3f}; validation balanced accuracy "
        f"{val.get('balanced_accuracy', float('nan')):.4f}, ROC-AUC "
        f"{val.get('roc_auc') or float('nan'):.4f}"
    )
    click.echo(f"checkpoint: {Path(run_dir) / 'best.json'}")
