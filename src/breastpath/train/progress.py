"""Progress of a run: the history and early-stopping state (:class:`Progress`), the ``best``
and resumable ``last`` checkpoints of each epoch (:func:`save_epoch`) and the resume from
``last`` (:func:`resume_from`): weights, optimizer, random states and progress, so that a killed run
continues to the result it would have had."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from breastpath.checkpoint import (
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from breastpath.config import TrainConfig
from breastpath.errors import CheckpointError
from breastpath.inference.device import DistInfo
from breastpath.io import remove_stale_temps
from breastpath.train.ema import restore_ema
from breastpath.train.step import Step

log = logging.getLogger(__name__)


@dataclass
class Progress:
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


def save_epoch(run: Path, step: Step, progress: Progress, row: dict[str, Any], *, improved: bool):
    """Write ``best`` (when the epoch improved) and the resumable ``last`` checkpoint."""
    epoch = int(row["epoch"])
    model_tensors = _prefixed("model.", step.kept.state_dict())  # the average, with EMA
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
    if step.ema is not None:  # the weights being trained, to go on from them
        model_tensors = {**model_tensors, **_prefixed("raw.", step.model.state_dict())}
    tensors = {
        **model_tensors,
        **_prefixed("optim.", opt_tensors),
        "rng.augment": step.generator.get_state(),
        "rng.torch": torch.get_rng_state(),
    }
    meta = step.meta.replace(epoch=epoch, metrics={"val": row}, resume=resume)
    save_checkpoint(run / "last", tensors=tensors, meta=meta)


def resume_from(run: Path, step: Step, config: TrainConfig, *, info: DistInfo) -> Progress:
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
    if step.ema is None:
        step.model.load_state_dict(state.model_state())
    else:
        if not state.prefixed("raw."):
            raise CheckpointError(f"{run}: last checkpoint was saved without ema_half_life")
        step.model.load_state_dict(state.prefixed("raw."))
        restore_ema(step.ema, state.model_state())
    step.optimizer.load_state_dict(
        optimizer_from_tensors(state.prefixed("optim."), saved["optimizer"])
    )
    step.generator.set_state(state.tensors["rng.augment"])
    torch.set_rng_state(state.tensors["rng.torch"])
    if info.rank:  # rank 0's state was saved: keep other ranks' dropout masks their own
        torch.manual_seed(config.seed + info.rank + 7919 * saved["epoch"])
    log.info("resuming %s after epoch %d", run, saved["epoch"] + 1)
    return Progress(
        history=saved["history"],
        start_epoch=saved["epoch"] + 1,
        best_loss=saved["best_loss"],
        bad_epochs=saved["bad_epochs"],
        best_epoch=saved["best_epoch"],
    )


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in tensors.items()}
