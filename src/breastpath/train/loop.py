"""The training loop: one function you can read top to bottom.

``train(data_dir, run_dir, config)`` trains a model on a prepared cache, validates every epoch,
keeps ``last`` (resumable) and ``best`` (by the monitored metric) checkpoints, stops early, then
picks the decision threshold on the validation split and stores it in ``best``. What is common
to every run (the run folder, the initial model, the checkpoint metadata, the threshold) is in
:mod:`breastpath.train.run`; the parts of a step in :mod:`breastpath.train.step`, the
checkpoints of each epoch and the resume in :mod:`breastpath.train.progress`, the optimizer and
schedule in :mod:`breastpath.train.optim`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from breastpath.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from breastpath.config import TrainConfig
from breastpath.data.cache import PreparedData, open_prepared
from breastpath.data.loader import BatchLoader
from breastpath.inference.batches import checkpoint_rows
from breastpath.inference.score import cancer_score, cancer_truth
from breastpath.io import write_csv
from breastpath.train import distributed, finetune
from breastpath.train.progress import Progress, resume_from, save_epoch
from breastpath.train.run import (
    split_rows,
    start_run,
    with_threshold,
)
from breastpath.train.step import Step, make_loader
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


def train(
    data_dir: str | Path, run_dir: str | Path, config: TrainConfig, *, resume: bool = False
) -> dict[str, Any]:
    """Train ``config.model`` on the prepared folder ``data_dir``; write the run to ``run_dir``.

    Returns a summary: best epoch, validation metrics and the chosen threshold. With
    ``config.head.kind == "svm"`` the run is a CNN + SVM hybrid (:mod:`breastpath.train.hybrid`).
    """
    if config.head.kind == "svm":
        from breastpath.train.hybrid import train_svm_hybrid

        return train_svm_hybrid(data_dir, run_dir, config)
    data, run = open_prepared(data_dir), Path(run_dir)
    train_rows, val_rows = split_rows(data, need_val=False)
    if len(val_rows) == 0:  # e.g. a final model trained on every development patient
        log.warning(
            "%s: no validation split: every epoch replaces `best` (the last is kept) and the "
            "threshold stays 0.5",
            data.root,
        )
    info, device = distributed.setup(config.runtime.device)
    step = Step.create(config, data, train_rows, info=info, device=device)
    loader = make_loader(data, train_rows, config, info=info)
    step.start_average(config, steps_per_epoch=len(loader))
    progress = Progress()
    if resume and (run / "last.json").is_file():
        progress = resume_from(run, step, config, info=info)
    elif info.is_main:
        start_run(run, config, data)
    step.wrap(config)  # DDP and torch.compile, once the weights are final
    for epoch in range(progress.start_epoch, config.stop.epochs):
        lr = finetune.set_learning_rates(step.optimizer, epoch, config)
        loader.set_epoch(epoch)
        trained = _train_epoch(step, loader, epoch, config)
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            **trained,
            **_validation_row(step, data, val_rows, config),
        }
        row = {key: row[key] for key in HISTORY_FIELDS}
        improved = progress.record(row, config)
        if info.is_main:
            log.info("epoch %d: %s", epoch + 1, _format_row(row))
            write_csv(run / "history.csv", progress.history, HISTORY_FIELDS)
            save_epoch(run, step, progress, row, improved=improved)
        distributed.barrier(info)
        if progress.bad_epochs >= config.stop.patience:
            log.info(
                "early stop: no %s improvement for %d epochs",
                config.stop.monitor,
                progress.bad_epochs,
            )
            break
    summary: dict[str, Any] = {
        "best_epoch": progress.best_epoch,
        "epochs_run": len(progress.history),
    }
    if info.is_main:
        summary.update(_finalise_best(run, data, val_rows, config, device=device))
    distributed.teardown(info)
    return summary


def _train_epoch(
    step: Step, loader: BatchLoader, epoch: int, config: TrainConfig
) -> dict[str, float]:
    """One pass over ``loader``; loss, accuracy and speed summed over every rank."""
    info, device, scaler = step.info, step.device, step.scaler
    step.model.train()
    finetune.set_stage(step.model, epoch, config, freeze_grads=not info.enabled)
    started, seen = time.perf_counter(), 0
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    bar = _progress(loader, epoch, config, enabled=config.runtime.progress and info.is_main)
    for index, (images, targets, _) in enumerate(bar):
        x, targets = step.inputs(images, targets, loader.shard(index), config)
        y = targets.to(device, non_blocking=True)
        denominator = distributed.global_denominator(y, step.weight, info)  # [weight sum, rows]
        with torch.autocast(device.type, dtype=step.amp_dtype, enabled=step.use_amp):
            logits = step.net(x)  # type: ignore[misc]
            share = step.loss_share(logits.float(), x, y, denominator)  # our part of the mean
            loss = share * info.world_size  # DDP averages gradients over ranks
        step.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(step.optimizer)
        scaler.update()
        step.update_average()
        seen += len(y)
        loss_sum += share.detach() * denominator[1]
        correct += (logits.detach().argmax(1) == y).sum()
        if hasattr(bar, "set_postfix") and bar.n % 20 == 0:  # syncs the device: not every step
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{int(correct) / seen:.3f}")
    elapsed = time.perf_counter() - started
    counts = torch.stack(
        [
            loss_sum.double(),
            correct.double(),
            torch.tensor(seen, dtype=torch.float64, device=device),
        ]
    )
    totals = distributed.all_reduce_sum(counts, info)  # summed over ranks
    total = max(int(totals[2]), 1)
    return {
        "train_loss": float(totals[0]) / total,
        "train_acc": int(totals[1]) / total,
        "seconds": round(elapsed, 3),
        "patches_per_s": round(int(totals[2]) / elapsed, 1),
    }


def _validation_row(
    step: Step, data: PreparedData, rows: np.ndarray, config: TrainConfig
) -> dict[str, Any]:
    """Validation loss, accuracy and cancer-score ROC-AUC (the same on every rank); ``None``
    without validation rows."""
    if len(rows) == 0:
        return {"val_loss": None, "val_acc": None, "val_auc": None}
    probs, val_loss = validate(
        step.kept,
        data.images,
        rows,
        data.labels,
        mean=step.mean,
        std=step.std,
        device=step.device,
        batch_size=config.runtime.eval_batch_size,
        num_classes=len(data.class_names),
        weight=step.weight,
        info=step.info,
    )
    labels, cancer = data.labels[rows], step.meta.cancer_classes
    return {
        "val_loss": val_loss,
        "val_acc": float((probs.argmax(1) == labels).mean()),
        "val_auc": _auc(cancer_truth(labels, cancer), cancer_score(probs, cancer)),
    }


def _finalise_best(
    run: Path, data: PreparedData, val_rows: np.ndarray, config: TrainConfig, *, device
) -> dict[str, Any]:
    """Reload the best weights, choose the threshold on validation, rewrite ``best.json``
    (without validation rows the threshold stays as it is)."""
    best = load_checkpoint(run / "best.json")
    if len(val_rows) == 0:
        return {"threshold": best.meta.threshold}
    probs = checkpoint_rows(
        best, data.images, val_rows, device=device, batch_size=config.runtime.eval_batch_size
    )
    meta, summary = with_threshold(best.meta, probs, data.labels[val_rows], config)
    save_checkpoint(run / "best", tensors=best.tensors, meta=meta)
    return summary


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def _format_row(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def _progress(loader: BatchLoader, epoch: int, config: TrainConfig, *, enabled: bool):
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    return tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{config.stop.epochs}",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
    )
