"""What every training run does around its loop, whichever head it trains.

Both the end-to-end loop (:mod:`breastpath.train.loop`) and the CNN + SVM hybrid
(:mod:`breastpath.train.hybrid`) use these, so a run folder, a checkpoint's metadata and its
threshold mean the same thing for both:

* :func:`split_rows`: the training and validation rows of a prepared folder, refused when empty;
* :func:`start_run`: the run folder (``config.yaml`` with the training choices and, apart, the
  runtime; ``splits.csv``; no stale ``best``/``last`` checkpoints);
* :func:`create_initial_model` and :func:`normalization`: the model with its starting weights,
  and the mean/std its inputs are normalised with (its registry data config, else the data's);
* :func:`checkpoint_meta`: the JSON half of the checkpoint;
* :func:`with_threshold`: the decision threshold chosen on the validation split, on the very
  cancer score it is applied to (:func:`choose_cancer_threshold`), written into the metadata.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import breastpath
from breastpath.checkpoint import FORMAT, CheckpointMeta, default_cancer_classes, parse_meta
from breastpath.config import RuntimeConfig, TrainConfig, dump_yaml
from breastpath.data.cache import PreparedData
from breastpath.data.index import input_fit_of
from breastpath.errors import ConfigError
from breastpath.evaluate.metrics import binary_metrics, choose_threshold
from breastpath.inference.score import cancer_score, cancer_truth
from breastpath.models import create_model, resolve_data_config

log = logging.getLogger(__name__)


def split_rows(
    data: PreparedData, *, what: str = "training", need_val: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The train and validation rows of ``data``; :class:`ConfigError` when the training rows,
    or (with ``need_val``) the validation rows, are empty."""
    train_rows, val_rows = data.indices("train"), data.indices("val")
    if len(train_rows) == 0:
        raise ConfigError(f"{data.root}: the training split is empty")
    if len(val_rows) == 0 and need_val:
        raise ConfigError(
            f"{data.root}: the validation split is empty ({what} needs it); prepare with "
            "--val-frac > 0"
        )
    return train_rows, val_rows


def apply_runtime(runtime: RuntimeConfig) -> None:
    """Process-wide runtime settings (torch's thread count)."""
    if runtime.num_threads > 0:
        torch.set_num_threads(runtime.num_threads)


def start_run(run: Path, config: TrainConfig, data: PreparedData) -> None:
    """Create the run folder: ``config.yaml`` (training choices under ``train``, the runtime
    under ``runtime``, the data's metadata under ``data``) and ``splits.csv``; checkpoints of an
    earlier run there are removed."""
    run.mkdir(parents=True, exist_ok=True)
    for stale in ("best.json", "last.json"):
        (run / stale).unlink(missing_ok=True)
    dump_yaml(
        run / "config.yaml",
        {
            "train": config.training_dict(),
            "runtime": config.runtime.to_dict(),
            "data": data.meta,
        },
    )
    shutil.copyfile(data.root / "splits.csv", run / "splits.csv")


def create_initial_model(config: TrainConfig, *, num_classes: int) -> tuple[nn.Module, dict]:
    """``config.model`` with its starting weights (offline ImageNet, ``--weights`` or none), and
    where they came from (``{"source": "scratch"}`` when untrained)."""
    spec = config.model
    model = create_model(
        spec.name,
        num_classes=num_classes,
        pretrained=spec.pretrained,
        weights=spec.weights or None,
        **spec.args,
    )
    init = dict(getattr(model, "init_info", {"source": "scratch"}))
    if init["source"] == "scratch" and spec.name != "cancernet":
        log.warning("%s starts from random weights (no ImageNet weights or --weights)", spec.name)
    return model, init


def normalization(
    name: str, args: dict[str, Any], data: PreparedData
) -> tuple[list[float], list[float]]:
    """``(mean, std)`` inputs of model ``name`` are normalised with: its registry data config
    (timm backbones: ImageNet's), else the training data's statistics (CancerNet)."""
    model_data = resolve_data_config(name, args)
    if model_data is None:
        return list(data.meta["mean"]), list(data.meta["std"])
    return list(model_data.mean), list(model_data.std)


def checkpoint_meta(
    config: TrainConfig,
    data: PreparedData,
    model_args: dict[str, Any],
    *,
    model_name: str | None = None,
    **extra: Any,
) -> CheckpointMeta:
    """The JSON half of a checkpoint: all that is needed to use the weights.

    ``model_name`` (default ``config.model.name``) is the registered model the weights belong
    to; its mean/std and data config come from :func:`normalization` and the registry. The
    ``train`` block records the training choices only (no runtime settings).
    """
    name = model_name or config.model.name
    mean, std = normalization(name, model_args, data)
    model_data = resolve_data_config(name, model_args)
    raw = {
        "format": FORMAT,
        "model": {"name": name, "num_classes": len(data.class_names), "args": model_args},
        "input_size": list(data.image_size),
        # the cache's own fit where its images needed one, else what its source implies
        "input_fit": data.meta.get("larger_image_fit") or input_fit_of(data.meta["dataset"]),
        "mean": mean,
        "std": std,
        "class_names": data.class_names,
        "cancer_classes": list(default_cancer_classes(data.class_names)),
        "threshold": 0.5,
        "tta": config.model.tta,
        "data": {
            "dataset": data.meta["dataset"],
            "task": data.meta["task"],
            "split": data.meta["split"],
            "prepared": data.root.name,
            **_magnifications(data),
        },
        "train": config.training_dict(),
        "version": breastpath.__version__,
        # the stain target the cache was normalized to: applied to every new image at inference
        **({"stain": data.meta["stain"]} if data.meta.get("stain") else {}),
        **({"data_config": model_data.to_dict()} if model_data is not None else {}),
        **extra,
    }
    return parse_meta(raw, source="new checkpoint")


def choose_cancer_threshold(
    probs: np.ndarray, labels: np.ndarray, cancer_classes: Sequence[int], *, criterion: str
) -> tuple[float, dict[str, Any]]:
    """The threshold on the cancer score (:func:`~breastpath.inference.score.cancer_score`)
    that maximises ``criterion`` for these class ``labels``, and the metrics at it.

    The threshold is chosen on the very score it is later applied to: for a subtype model,
    the summed probability of the malignant subtypes against "is malignant".
    """
    truth, score = cancer_truth(labels, cancer_classes), cancer_score(probs, cancer_classes)
    threshold = float(choose_threshold(truth, score, criterion=criterion))
    return threshold, binary_metrics(truth, score, threshold=threshold)


def with_threshold(
    meta: CheckpointMeta, probs: np.ndarray, labels: np.ndarray, config: TrainConfig
) -> tuple[CheckpointMeta, dict[str, Any]]:
    """``meta`` with the threshold chosen on validation ``probs``/``labels``, and a summary
    (``threshold``, ``val``: the validation metrics at it)."""
    criterion = config.stop.threshold_metric
    threshold, val_metrics = choose_cancer_threshold(
        probs, labels, meta.cancer_classes, criterion=criterion
    )
    meta = meta.replace(
        threshold=threshold,
        threshold_rule=f"maximises {criterion} of the cancer score on the validation split",
        metrics={**meta.metrics, "val_at_threshold": val_metrics},
    )
    return meta, {"threshold": float(threshold), "val": val_metrics}


def _magnifications(data: Any) -> dict[str, Any]:
    """``{"magnifications": [...]}`` of a cache's BreakHis rows (those that state one), or
    nothing: what the model was trained at (:mod:`breastpath.inference.magnification`)."""
    found = sorted({str(r.get("magnification") or "") for r in data.rows} - {""}, key=int)
    return {"magnifications": found} if found else {}
