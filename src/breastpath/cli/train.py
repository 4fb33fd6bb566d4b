"""``breastpath train --data DIR --out RUN``."""

from __future__ import annotations

import click

from breastpath.config import STAIN_AUGMENTS

FLAGS = (
    "model",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "seed",
    "device",
    "max_steps_per_epoch",
    "pretrained",
    "weights",
    "freeze_epochs",
    "backbone_lr_scale",
    "finetune_lr_scale",
    "label_smoothing",
    "tta",
    "head",
    "backbone_checkpoint",
    "stain_augment",
    "stain_sigma",
)


def stain_augment_options(command):
    """The ``--stain-augment`` and ``--stain-sigma`` options (``train`` and ``crossval``)."""
    command = click.option(
        "--stain-sigma", type=float, default=None, help="Stain augmentation strength (0: default)."
    )(command)
    return click.option(
        "--stain-augment",
        type=click.Choice(STAIN_AUGMENTS),
        default=None,
        help="H&E stain augmentation: hed jitter, or Tellez concentration perturbation with each "
        "image's stains from ruifrok (fixed), macenko or vahadane [default: none].",
    )(command)


@click.command("train")
@click.option("--data", "data_dir", required=True, help="A folder written by `breastpath prepare`.")
@click.option("--out", "run_dir", required=True, help="Run folder for checkpoints and history.")
@click.option("--config", "config_file", default=None, help="YAML file of training options.")
@click.option("--model", default=None, help="Model name [default: cancernet].")
@click.option("--epochs", type=int, default=None)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="The global batch: under torchrun each of N processes takes batch/N rows.",
)
@click.option("--lr", type=float, default=None)
@click.option("--optimizer", type=click.Choice(["adagrad", "adam", "adamw", "sgd"]), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--device", default=None, help="auto, cpu or cuda[:N].")
@click.option("--max-steps-per-epoch", type=int, default=None)
@click.option(
    "--pretrained/--no-pretrained",
    default=None,
    help="Start from offline ImageNet weights (installed packages; never downloaded).",
)
@click.option("--weights", default=None, help="Local state dict (timm/torchvision) to start from.")
@click.option("--input-size", type=int, default=None, help="Working side of a timm backbone.")
@click.option("--preset", is_flag=True, help="Use the backbone's optimizer preset as defaults.")
@click.option("--freeze-epochs", type=int, default=None, help="Epochs training only the head.")
@click.option("--backbone-lr-scale", type=float, default=None, help="Backbone lr / head lr.")
@click.option("--finetune-lr-scale", type=float, default=None, help="lr factor after freezing.")
@click.option("--label-smoothing", type=float, default=None)
@click.option(
    "--tta",
    type=click.Choice(["none", "flips", "dihedral"]),
    default=None,
    help="Test-time augmentation stored in the checkpoint.",
)
@click.option(
    "--head",
    type=click.Choice(["linear", "svm"]),
    default=None,
    help="svm: an RBF SVM on the backbone's embeddings.",
)
@click.option("--backbone-checkpoint", default=None, help="svm head: embed with this checkpoint.")
@stain_augment_options
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--resume", is_flag=True, help="Continue from RUN/last.json.")
def command(
    data_dir, run_dir, config_file, input_size, preset, no_progress, resume, **flags
) -> None:
    """Train a classifier on a prepared folder (options: flags > --config file > preset >
    defaults)."""
    from pathlib import Path

    from breastpath.config import load_yaml
    from breastpath.train.loop import train

    saved: dict = {}
    if resume and config_file is None and (Path(run_dir) / "config.yaml").is_file():
        saved = load_yaml(Path(run_dir) / "config.yaml").get("train", {})
    config = train_config(
        flags,
        config_file=config_file,
        input_size=input_size,
        preset=preset,
        no_progress=no_progress,
        base=saved,
    )
    _say_where_weights_come_from(config)
    summary = train(data_dir, run_dir, config, resume=resume)
    val = summary.get("val", {})
    auc = val.get("roc_auc")
    svm = summary.get("svm")
    fitted = (
        f"SVM C={svm['C']:g} with {svm['n_support']} support vectors"
        if svm
        else f"best epoch {summary['best_epoch']} of {summary['epochs_run']}"
    )
    click.echo(
        f"{fitted}; threshold "
        f"{summary.get('threshold', 0.5):.3f}; validation balanced accuracy "
        f"{val.get('balanced_accuracy', float('nan')):.4f}, ROC-AUC "
        f"{float('nan') if auc is None else auc:.4f}"
    )
    click.echo(f"checkpoint: {Path(run_dir) / 'best.json'}")


def train_config(
    flags: dict,
    *,
    config_file: str | None,
    input_size: int | None,
    preset: bool,
    no_progress: bool,
    base: dict | None = None,
):
    """A :class:`~breastpath.config.TrainConfig` from command-line flags (those not ``None``),
    over a ``--config`` file, over ``base`` (a resumed run's), over the backbone's preset
    (``--preset``), over the defaults. Shared by ``train`` and ``crossval``."""
    from breastpath.config import TrainConfig, load_yaml
    from breastpath.train import presets

    values: dict = dict(base or {})
    if config_file:
        loaded = load_yaml(config_file)
        values.update(loaded.get("train", loaded))
    values.update({k: v for k, v in flags.items() if k in FLAGS and v is not None})
    if input_size is not None:
        values["model_args"] = {**values.get("model_args", {}), "input_size": input_size}
    if no_progress:
        values["progress"] = False
    if preset:
        model = values.get("model", "cancernet")
        start = bool(values.get("pretrained") or values.get("weights"))
        values = {**presets.preset(model, pretrained=start, epochs=values.get("epochs")), **values}
    return TrainConfig.from_dict(values)


def _say_where_weights_come_from(config) -> None:
    if config.head == "svm" and config.backbone_checkpoint:
        click.echo(f"embeddings from {config.backbone_checkpoint}", err=True)
    elif config.weights:
        click.echo(f"{config.model}: starting from {config.weights}", err=True)
    elif config.pretrained:
        click.echo(f"{config.model}: starting from offline ImageNet weights", err=True)
    elif config.model != "cancernet":
        click.echo(
            f"{config.model}: training from scratch (no ImageNet weights; give --pretrained "
            "where installed, or --weights PATH)",
            err=True,
        )
