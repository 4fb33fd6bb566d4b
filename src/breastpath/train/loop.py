"""The training loop: one function you can read top to bottom.

``train(data_dir, run_dir, config)`` trains a model on a prepared cache, validates every epoch,
keeps ``last`` (resumable) and ``best`` (lowest validation loss) checkpoints, stops early, then
picks the decision threshold on the validation split and stores it in ``best``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import breastpath
from breastpath.checkpoint import (
    FORMAT,
    CheckpointMeta,
    default_cancer_classes,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    parse_meta,
    save_checkpoint,
)
from breastpath.config import TrainConfig, dump_yaml
from breastpath.data.augment import augment_batch, to_model_input
from breastpath.data.cache import PreparedData, open_prepared
from breastpath.data.loader import BatchLoader
from breastpath.errors import CheckpointError, ConfigError
from breastpath.evaluate.metrics import choose_threshold
from breastpath.inference.batches import predict_rows
from breastpath.inference.score import cancer_score, cancer_truth
from breastpath.io import remove_stale_temps, write_csv
from breastpath.models import create_model, model_normalization
from breastpath.train import distributed, finetune
from breastpath.train.validate import validate

log = logging.getLogger(__name__)

HISTORY_FIELDS = [
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_auc",
    "seconds",
    "patches_per_s",
]


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * n_c)``, as sklearn's ``class_weight="balanced"``.

    A class absent from ``labels`` gets weight 0: with label smoothing, a large weight on it
    would pull every prediction towards a class the model never sees (a cross-validation fold
    can hold out a subtype's only patient).

    Examples
    --------
    >>> class_weights(np.array([0, 0, 1, 2]), 4).tolist()
    [0.5, 1.0, 1.0, 0.0]
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1.0)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """Adagrad (CancerNet's choice), Adam/AdamW, or SGD with Nesterov momentum."""
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )


def lr_at(epoch: int, config: TrainConfig) -> float:
    """Learning rate of an epoch (0-based): linear warm-up, then cosine, step or constant."""
    if epoch < config.warmup_epochs:
        return config.lr * (epoch + 1) / (config.warmup_epochs + 1)
    if config.schedule == "cosine":
        span = max(config.epochs - config.warmup_epochs, 1)
        progress = (epoch - config.warmup_epochs) / span
        return config.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
    if config.schedule == "step":
        return config.lr * (0.1 ** (epoch // max(config.epochs // 3, 1)))
    return config.lr


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def checkpoint_meta(
    config: TrainConfig,
    data: PreparedData,
    model_args: dict[str, Any],
    *,
    model_name: str | None = None,
    **extra: Any,
) -> CheckpointMeta:
    """The JSON half of a checkpoint: all that is needed to use the weights.

    ``model_name`` (default ``config.model``) is the registered model the weights belong to.
    """
    name = model_name or config.model
    raw = {
        "format": FORMAT,
        "model": {"name": name, "num_classes": len(data.class_names), "args": model_args},
        "input_size": list(data.image_size),
        "mean": data.meta["mean"],
        "std": data.meta["std"],
        "class_names": data.class_names,
        "cancer_classes": list(default_cancer_classes(data.class_names)),
        "threshold": 0.5,
        "data": {
            "dataset": data.meta["dataset"],
            "task": data.meta["task"],
            "split": data.meta["split"],
            "prepared": data.root.name,
        },
        "train": config.to_dict(),
        "version": breastpath.__version__,
        # the stain target the cache was normalized to: applied to every new image at inference
        **({"stain": data.meta["stain"]} if data.meta.get("stain") else {}),
        **extra,
    }
    return parse_meta(raw, source="new checkpoint")


def create_initial_model(config: TrainConfig, *, num_classes: int) -> tuple[nn.Module, dict]:
    """``config.model`` with its starting weights (offline ImageNet, ``--weights`` or none), and
    where they came from (``{"source": "scratch"}`` when untrained)."""
    model = create_model(
        config.model,
        num_classes=num_classes,
        pretrained=config.pretrained,
        weights=config.weights or None,
        **config.model_args,
    )
    return model, dict(getattr(model, "init_info", {"source": "scratch"}))


def train(
    data_dir: str | Path, run_dir: str | Path, config: TrainConfig, *, resume: bool = False
) -> dict[str, Any]:
    """Train ``config.model`` on the prepared folder ``data_dir``; write the run to ``run_dir``.

    Returns a summary: best epoch, validation metrics and the chosen threshold. With
    ``config.head == "svm"`` the run is a CNN + SVM hybrid (:mod:`breastpath.train.hybrid`).
    """
    if config.head == "svm":
        from breastpath.train.hybrid import train_svm_hybrid

        return train_svm_hybrid(data_dir, run_dir, config)
    data = open_prepared(data_dir)
    run = Path(run_dir)
    train_rows, val_rows = data.indices("train"), data.indices("val")
    if len(train_rows) == 0:
        raise ConfigError(f"{data_dir}: the training split is empty")
    if len(val_rows) == 0:
        raise ConfigError(f"{data_dir}: the validation split is empty; prepare with --val-frac > 0")
    info, device = distributed.setup(config.device)
    if config.batch_size % info.world_size or len(train_rows) < info.world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} is the global batch: it must be a multiple of the "
            f"{info.world_size} processes, and the training split must have as many rows"
        )
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed + info.rank)
    num_classes = len(data.class_names)
    model_args = dict(config.model_args)
    model, init = create_initial_model(config, num_classes=num_classes)
    if init["source"] == "scratch" and config.model != "cancernet":
        log.warning("training %s from scratch (no ImageNet weights or --weights)", config.model)
    model = model.to(device).to(memory_format=torch.channels_last)
    if info.enabled:  # batch norm over the global batch, as in one process
        model = distributed.sync_batchnorm(model, device=device)
    optimizer = make_optimizer(finetune.param_groups(model, config), config)
    norm_mean, norm_std = model_normalization(model) or (data.meta["mean"], data.meta["std"])
    weights = class_weights(data.labels[train_rows], num_classes) if config.class_weights else None
    weight = None if weights is None else weights.to(device)
    # summed, then divided by the global batch's weight sum: the global (weighted) mean under DDP
    criterion = nn.CrossEntropyLoss(
        weight=weight, label_smoothing=config.label_smoothing, reduction="sum"
    )
    mean = torch.tensor(norm_mean, dtype=torch.float32, device=device)
    std = torch.tensor(norm_std, dtype=torch.float32, device=device)
    # the same on every rank: augmentation is drawn for the whole global batch (see below)
    generator = torch.Generator().manual_seed(config.seed)

    history: list[dict[str, Any]] = []
    start_epoch, best_loss, bad_epochs, best_epoch = 0, math.inf, 0, -1
    if resume and (run / "last.json").is_file():
        if info.is_main:  # a killed run may have left atomic-write temp files (history.csv, ...)
            remove_stale_temps(run)
        state = load_checkpoint(run / "last.json")
        resume_info = state.meta.resume
        if resume_info is None:
            raise CheckpointError(f"{run}: last checkpoint holds no resume state")
        if state.meta.model.name != config.model:
            raise CheckpointError(
                f"{run}: last checkpoint is a {state.meta.model.name}, not a {config.model}"
            )
        model.load_state_dict(state.model_state())
        optimizer.load_state_dict(
            optimizer_from_tensors(state.prefixed("optim."), resume_info["optimizer"])
        )
        generator.set_state(state.tensors["rng.augment"])
        torch.set_rng_state(state.tensors["rng.torch"])
        if info.rank:  # rank 0's state was saved: keep other ranks' dropout masks their own
            torch.manual_seed(config.seed + info.rank + 7919 * resume_info["epoch"])
        history = resume_info["history"]
        start_epoch = resume_info["epoch"] + 1
        best_loss, bad_epochs = resume_info["best_loss"], resume_info["bad_epochs"]
        best_epoch = resume_info["best_epoch"]
        log.info("resuming %s after epoch %d", run, start_epoch)
    elif info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        for stale in ("best.json", "last.json"):
            (run / stale).unlink(missing_ok=True)
        dump_yaml(run / "config.yaml", {"train": config.to_dict(), "data": data.meta})
        shutil.copyfile(data.root / "splits.csv", run / "splits.csv")

    net: nn.Module = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    step_fn = torch.compile(net) if config.compile else net
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    loader = BatchLoader(
        data.images,
        data.labels,
        train_rows,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        drop_last=len(train_rows) > config.batch_size,
        max_batches=config.max_steps_per_epoch,
        rank=info.rank,
        world_size=info.world_size,
    )
    meta = checkpoint_meta(
        config,
        data,
        model_args,
        mean=norm_mean,
        std=norm_std,
        tta=config.tta,
        init=init,
        data_config=getattr(model, "data_config", None),
    )
    cancer_classes = meta.cancer_classes

    for epoch in range(start_epoch, config.epochs):
        lr = finetune.set_learning_rates(optimizer, epoch, config)
        loader.set_epoch(epoch)
        model.train()
        finetune.set_stage(model, epoch, config, freeze_grads=not info.enabled)
        started = time.perf_counter()
        seen = 0
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        bar = _progress(loader, epoch, config, enabled=config.progress and info.is_main)
        for step, (images, targets, _) in enumerate(bar):
            shard = loader.shard(step)  # this rank's rows [start, stop) of the global batch
            if config.augment:  # drawn for the global batch on every rank; keep our slice
                x = augment_batch(
                    distributed.pad_to_global(images, shard),
                    mean=mean,
                    std=std,
                    device=device,
                    generator=generator,
                    jitter=config.color_jitter,
                    stain=config.stain_augment,
                    stain_sigma=config.stain_sigma,
                )[shard[0] : shard[1]]
            else:
                x = to_model_input(images, mean=mean, std=std, device=device)
            y = targets.to(device, non_blocking=True)
            denominator = distributed.global_denominator(y, weight, info)  # [weight sum, rows]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = step_fn(x)
                share = criterion(logits.float(), y) / denominator[0]  # our part of the mean
                loss = share * info.world_size  # DDP averages gradients over ranks
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            seen += len(y)
            loss_sum += share.detach() * denominator[1]
            correct += (logits.detach().argmax(1) == y).sum()
            if hasattr(bar, "set_postfix") and bar.n % 20 == 0:  # syncs the device: not every step
                bar.set_postfix(
                    loss=f"{float(loss_sum) / seen:.4f}", acc=f"{int(correct) / seen:.3f}"
                )
        elapsed = time.perf_counter() - started
        seen_here = torch.tensor(seen, dtype=torch.float64, device=device)
        counts = torch.stack([loss_sum.double(), correct.double(), seen_here])
        totals = distributed.all_reduce_sum(counts, info)  # summed over ranks
        loss_total, correct_total, seen = float(totals[0]), int(totals[1]), int(totals[2])
        probs, val_loss = validate(
            model,
            data.images,
            val_rows,
            data.labels,
            mean=mean,
            std=std,
            device=device,
            batch_size=config.eval_batch_size,
            num_classes=num_classes,
            weight=weight,
            info=info,
        )
        val_labels = data.labels[val_rows]
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_total / max(seen, 1),
            "train_acc": correct_total / max(seen, 1),
            "val_loss": val_loss,
            "val_acc": float((probs.argmax(1) == val_labels).mean()),
            "val_auc": _auc(
                cancer_truth(val_labels, cancer_classes), cancer_score(probs, cancer_classes)
            ),
            "seconds": round(elapsed, 3),
            "patches_per_s": round(seen / elapsed, 1),
        }
        history.append(row)
        # `best_loss` is the monitored value, sign-flipped for AUC so that lower is better
        monitored = val_loss if config.monitor == "val_loss" else -(row["val_auc"] or 0.0)
        improved = monitored < best_loss - config.min_delta
        if improved:
            best_loss, bad_epochs, best_epoch = monitored, 0, epoch + 1
        else:
            bad_epochs += 1
        if info.is_main:
            log.info("epoch %d: %s", epoch + 1, _format_row(row))
            write_csv(run / "history.csv", history, HISTORY_FIELDS)
            if improved:
                save_checkpoint(
                    run / "best",
                    tensors=_prefixed("model.", model.state_dict()),
                    meta=meta.replace(epoch=epoch + 1, metrics={"val": row}),
                )
            opt_tensors, opt_plain = optimizer_to_tensors(optimizer.state_dict())
            save_checkpoint(
                run / "last",
                tensors={
                    **_prefixed("model.", model.state_dict()),
                    **_prefixed("optim.", opt_tensors),
                    "rng.augment": generator.get_state(),
                    "rng.torch": torch.get_rng_state(),
                },
                meta=meta.replace(
                    epoch=epoch + 1,
                    metrics={"val": row},
                    resume={
                        "epoch": epoch,
                        "history": history,
                        "best_loss": best_loss,
                        "bad_epochs": bad_epochs,
                        "best_epoch": best_epoch,
                        "optimizer": opt_plain,
                    },
                ),
            )
        distributed.barrier(info)
        if bad_epochs >= config.patience:
            log.info("early stop: no %s improvement for %d epochs", config.monitor, bad_epochs)
            break

    summary: dict[str, Any] = {"best_epoch": best_epoch, "epochs_run": len(history)}
    if info.is_main:
        summary.update(_finalise_best(run, data, val_rows, config, device=device))
    distributed.teardown(info)
    return summary


def _finalise_best(
    run: Path,
    data: PreparedData,
    val_rows: np.ndarray,
    config: TrainConfig,
    *,
    device: torch.device,
) -> dict[str, Any]:
    """Reload the best weights, choose the threshold on validation, rewrite ``best.json``."""
    from breastpath.checkpoint import build_model

    best = load_checkpoint(run / "best.json")
    model = build_model(best).to(device).to(memory_format=torch.channels_last)
    mean = torch.tensor(best.meta.mean, dtype=torch.float32)
    std = torch.tensor(best.meta.std, dtype=torch.float32)
    probs = predict_rows(
        model,
        data.images,
        val_rows,
        mean=mean,
        std=std,
        device=device,
        batch_size=config.eval_batch_size,
    )
    threshold, val_metrics = choose_cancer_threshold(
        probs, data.labels[val_rows], best.meta.cancer_classes, criterion=config.threshold_metric
    )
    meta = best.meta.replace(
        threshold=threshold,
        threshold_rule=f"maximises {config.threshold_metric} of the cancer score on the "
        "validation split",
        metrics={**best.meta.metrics, "val_at_threshold": val_metrics},
    )
    save_checkpoint(run / "best", tensors=best.tensors, meta=meta)
    return {"threshold": float(threshold), "val": val_metrics}


def choose_cancer_threshold(
    probs: np.ndarray, labels: np.ndarray, cancer_classes: Sequence[int], *, criterion: str
) -> tuple[float, dict[str, Any]]:
    """The threshold on the cancer score (:func:`~breastpath.inference.score.cancer_score`)
    that maximises ``criterion`` for these class ``labels``, and the metrics at it.

    The threshold is chosen on the very score it is later applied to: for a subtype model,
    the summed probability of the malignant subtypes against "is malignant".
    """
    from breastpath.evaluate.metrics import binary_metrics

    truth, score = cancer_truth(labels, cancer_classes), cancer_score(probs, cancer_classes)
    threshold = float(choose_threshold(truth, score, criterion=criterion))
    return threshold, binary_metrics(truth, score, threshold=threshold)


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in tensors.items()}


def _format_row(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def _progress(loader: BatchLoader, epoch: int, config: TrainConfig, *, enabled: bool):
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    return tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{config.epochs}",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
    )
