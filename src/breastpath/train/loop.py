"""The training loop: one function you can read top to bottom.

``train(data_dir, run_dir, config)`` trains a model on a prepared cache, validates every epoch,
keeps ``last`` (resumable) and ``best`` (by the monitored metric) checkpoints, stops early, then
picks the decision threshold on the validation split and stores it in ``best``. What is common
to every run (the run folder, the initial model, the checkpoint metadata, the threshold) is in
:mod:`breastpath.train.run`; the optimizer and schedule in :mod:`breastpath.train.optim`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from breastpath.checkpoint import (
    CheckpointMeta,
    build_model,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from breastpath.config import TrainConfig
from breastpath.data.augment import (
    add_background,
    augment_batch,
    negative_class_of,
    to_model_input,
)
from breastpath.data.cache import PreparedData, open_prepared
from breastpath.data.loader import BatchLoader
from breastpath.errors import CheckpointError, ConfigError
from breastpath.inference.batches import predict_rows
from breastpath.inference.device import DistInfo
from breastpath.inference.score import cancer_score, cancer_truth
from breastpath.io import remove_stale_temps, write_csv
from breastpath.train import distributed, finetune
from breastpath.train.optim import class_weights, make_optimizer
from breastpath.train.run import (
    apply_runtime,
    checkpoint_meta,
    create_initial_model,
    normalization,
    split_rows,
    start_run,
    with_threshold,
)
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
    step = _Step.create(config, data, train_rows, info=info, device=device)
    progress = _Progress()
    if resume and (run / "last.json").is_file():
        progress = _resume(run, step, config, info=info)
    elif info.is_main:
        start_run(run, config, data)
    step.wrap(config)  # DDP and torch.compile, once the weights are final
    loader = _loader(data, train_rows, config, info=info)
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
            _save(run, step, progress, row, improved=improved)
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


@dataclass
class _Step:
    """The model, its optimizer and loss, and what one training step needs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    weight: torch.Tensor | None
    mean: torch.Tensor
    std: torch.Tensor
    generator: torch.Generator
    meta: CheckpointMeta
    info: DistInfo
    device: torch.device
    net: nn.Module | None = None  # the model as trained: under DDP, compiled
    use_amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    scaler: Any = None
    negative_class: int = 0  # what background frames are labelled (augment.background_frac)

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        data: PreparedData,
        train_rows: np.ndarray,
        *,
        info: DistInfo,
        device: torch.device,
    ) -> _Step:
        batch = config.optim.batch_size
        if batch % info.world_size or len(train_rows) < info.world_size:
            raise ConfigError(
                f"batch_size {batch} is the global batch: it must be a multiple of the "
                f"{info.world_size} processes, and the training split must have as many rows"
            )
        apply_runtime(config.runtime)
        torch.manual_seed(config.seed + info.rank)
        num_classes = len(data.class_names)
        model, init = create_initial_model(config, num_classes=num_classes)
        model = model.to(device).to(memory_format=torch.channels_last)
        if info.enabled:  # batch norm over the global batch, as in one process
            model = distributed.sync_batchnorm(model, device=device)
        optimizer = make_optimizer(finetune.param_groups(model, config), config.optim)
        mean, std = normalization(config.model.name, config.model.args, data)
        weights = class_weights(data.labels[train_rows], num_classes)
        weight = weights.to(device) if config.optim.class_weights else None
        # summed, then divided by the global batch's weight sum: the global (weighted) mean
        criterion = nn.CrossEntropyLoss(
            weight=weight, label_smoothing=config.optim.label_smoothing, reduction="sum"
        )
        meta = checkpoint_meta(config, data, dict(config.model.args), init=init)
        negative = 0  # background frames are labelled with the one non-cancer class
        if config.augment.background_frac > 0:
            negative = negative_class_of(data.class_names, list(meta.cancer_classes))
        return cls(
            model=model,
            optimizer=optimizer,
            criterion=criterion,
            weight=weight,
            mean=torch.tensor(mean, dtype=torch.float32, device=device),
            std=torch.tensor(std, dtype=torch.float32, device=device),
            # the same on every rank: augmentation is drawn for the whole global batch
            generator=torch.Generator().manual_seed(config.seed),
            meta=meta,
            info=info,
            device=device,
            negative_class=negative,
        )

    def wrap(self, config: TrainConfig) -> None:
        net: nn.Module = self.model
        if self.info.enabled:
            cuda = self.device.type == "cuda"
            net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if cuda else None
            )
        self.net = torch.compile(net) if config.runtime.compile else net  # type: ignore[assignment]
        self.use_amp = config.runtime.amp and self.device.type == "cuda"
        bf16 = self.use_amp and torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        fp16 = self.use_amp and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    def inputs(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        shard: tuple[int, int, int],
        config: TrainConfig,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's model input and targets; augmentation is drawn for the global batch on
        every rank and each keeps its slice, so that N processes see what one would."""
        if not config.augment.enabled:
            x = to_model_input(images, mean=self.mean, std=self.std, device=self.device)
            return x, targets
        augment = config.augment
        batch, targets = add_background(
            distributed.pad_to_global(images, shard),
            targets,
            rows=slice(shard[0], shard[1]),
            fraction=augment.background_frac,
            negative_class=self.negative_class,
            generator=self.generator,
        )
        x = augment_batch(
            batch,
            mean=self.mean,
            std=self.std,
            device=self.device,
            generator=self.generator,
            jitter=augment.color_jitter,
            stain=augment.stain_augment,
            stain_sigma=augment.stain_sigma,
        )[shard[0] : shard[1]]
        return x, targets


@dataclass
class _Progress:
    """Epochs done, history and early-stopping state (what ``last`` saves for a resume)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    best_loss: float = math.inf  # the monitored value, sign-flipped for AUC: lower is better
    bad_epochs: int = 0
    best_epoch: int = -1

    def record(self, row: dict[str, Any], config: TrainConfig) -> bool:
        """Append an epoch's row; return whether the monitored metric improved."""
        self.history.append(row)
        stop = config.stop
        monitored = row["val_loss"] if stop.monitor == "val_loss" else -(row["val_auc"] or 0.0)
        if row["val_loss"] is None:  # no validation split: the latest epoch is the best
            monitored = -float(row["epoch"])
        improved = monitored < self.best_loss - stop.min_delta
        if improved:
            self.best_loss, self.bad_epochs, self.best_epoch = monitored, 0, row["epoch"]
        else:
            self.bad_epochs += 1
        return improved


def _loader(
    data: PreparedData, rows: np.ndarray, config: TrainConfig, *, info: DistInfo
) -> BatchLoader:
    batch = config.optim.batch_size
    return BatchLoader(
        data.images,
        data.labels,
        rows,
        batch_size=batch,
        shuffle=True,
        seed=config.seed,
        drop_last=len(rows) > batch,
        max_batches=config.stop.max_steps_per_epoch,
        rank=info.rank,
        world_size=info.world_size,
    )


def _train_epoch(
    step: _Step, loader: BatchLoader, epoch: int, config: TrainConfig
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
            share = step.criterion(logits.float(), y) / denominator[0]  # our part of the mean
            loss = share * info.world_size  # DDP averages gradients over ranks
        step.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(step.optimizer)
        scaler.update()
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
    step: _Step, data: PreparedData, rows: np.ndarray, config: TrainConfig
) -> dict[str, Any]:
    """Validation loss, accuracy and cancer-score ROC-AUC (the same on every rank); ``None``
    without validation rows."""
    if len(rows) == 0:
        return {"val_loss": None, "val_acc": None, "val_auc": None}
    probs, val_loss = validate(
        step.model,
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


def _save(run: Path, step: _Step, progress: _Progress, row: dict[str, Any], *, improved: bool):
    """Write ``best`` (when the epoch improved) and the resumable ``last`` checkpoint."""
    epoch = int(row["epoch"])
    model_tensors = _prefixed("model.", step.model.state_dict())
    if improved:
        meta = step.meta.replace(epoch=epoch, metrics={"val": row})
        save_checkpoint(run / "best", tensors=model_tensors, meta=meta)
    opt_tensors, opt_plain = optimizer_to_tensors(step.optimizer.state_dict())
    resume = {
        "epoch": epoch - 1,
        "history": progress.history,
        "best_loss": progress.best_loss,
        "bad_epochs": progress.bad_epochs,
        "best_epoch": progress.best_epoch,
        "optimizer": opt_plain,
    }
    tensors = {
        **model_tensors,
        **_prefixed("optim.", opt_tensors),
        "rng.augment": step.generator.get_state(),
        "rng.torch": torch.get_rng_state(),
    }
    meta = step.meta.replace(epoch=epoch, metrics={"val": row}, resume=resume)
    save_checkpoint(run / "last", tensors=tensors, meta=meta)


def _resume(run: Path, step: _Step, config: TrainConfig, *, info: DistInfo) -> _Progress:
    """Load weights, optimizer, random states and progress from ``run/last``."""
    if info.is_main:  # a killed run may have left atomic-write temp files (history.csv, ...)
        remove_stale_temps(run)
    state = load_checkpoint(run / "last.json")
    saved = state.meta.resume
    if saved is None:
        raise CheckpointError(f"{run}: last checkpoint holds no resume state")
    if state.meta.model.name != config.model.name:
        raise CheckpointError(
            f"{run}: last checkpoint is a {state.meta.model.name}, not a {config.model.name}"
        )
    step.model.load_state_dict(state.model_state())
    step.optimizer.load_state_dict(
        optimizer_from_tensors(state.prefixed("optim."), saved["optimizer"])
    )
    step.generator.set_state(state.tensors["rng.augment"])
    torch.set_rng_state(state.tensors["rng.torch"])
    if info.rank:  # rank 0's state was saved: keep other ranks' dropout masks their own
        torch.manual_seed(config.seed + info.rank + 7919 * saved["epoch"])
    log.info("resuming %s after epoch %d", run, saved["epoch"] + 1)
    return _Progress(
        history=saved["history"],
        start_epoch=saved["epoch"] + 1,
        best_loss=saved["best_loss"],
        bad_epochs=saved["bad_epochs"],
        best_epoch=saved["best_epoch"],
    )


def _finalise_best(
    run: Path, data: PreparedData, val_rows: np.ndarray, config: TrainConfig, *, device
) -> dict[str, Any]:
    """Reload the best weights, choose the threshold on validation, rewrite ``best.json``
    (without validation rows the threshold stays as it is)."""
    best = load_checkpoint(run / "best.json")
    if len(val_rows) == 0:
        return {"threshold": best.meta.threshold}
    model = build_model(best).to(device).to(memory_format=torch.channels_last)
    probs = predict_rows(
        model,
        data.images,
        val_rows,
        mean=torch.tensor(best.meta.mean, dtype=torch.float32),
        std=torch.tensor(best.meta.std, dtype=torch.float32),
        device=device,
        batch_size=config.runtime.eval_batch_size,
    )
    meta, summary = with_threshold(best.meta, probs, data.labels[val_rows], config)
    save_checkpoint(run / "best", tensors=best.tensors, meta=meta)
    return summary


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


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
        desc=f"epoch {epoch + 1}/{config.stop.epochs}",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
    )
