"""``breastpath train --head svm``: CNN embeddings + an RBF SVM, stored as a safe checkpoint.

1. Embed the training and validation images with a CNN backbone: a zoo model (ImageNet weights
   with ``pretrained``, or ``weights=PATH``) or a trained breastpath checkpoint
   (``backbone_checkpoint``).
2. Standardise the embeddings and fit ``SVC(kernel="rbf", gamma="scale",
   class_weight="balanced")`` for each ``C`` in ``svm_c``; keep the ``C`` with the best
   validation ROC-AUC (balanced accuracy for more than two classes).
3. Refit that ``C`` inside ``CalibratedClassifierCV(method="sigmoid", ensemble=False)`` (Platt
   scaling on 5-fold out-of-fold decisions) for probabilities.
4. Copy the scaler, support vectors, dual coefficients, intercepts, gamma and sigmoid
   parameters into an :class:`~breastpath.models.hybrid.SVMHybrid` and save it like any
   checkpoint (safetensors + JSON, no pickle); choose the threshold on validation.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from breastpath.checkpoint import build_model, load_checkpoint, save_checkpoint
from breastpath.config import TrainConfig
from breastpath.data.cache import PreparedData, open_prepared
from breastpath.errors import ConfigError
from breastpath.inference.batches import embed_rows, predict_rows
from breastpath.inference.device import select_device
from breastpath.models.hybrid import SVMHybrid
from breastpath.models.svm import RBFSVMHead
from breastpath.train.run import (
    apply_runtime,
    checkpoint_meta,
    create_initial_model,
    normalization,
    split_rows,
    start_run,
    with_threshold,
)

log = logging.getLogger(__name__)


def _score(svc: Any, x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    if len(svc.classes_) == 2 and len(np.unique(y)) == 2:
        return float(roc_auc_score(y, svc.decision_function(x)))
    return float(balanced_accuracy_score(y, svc.predict(x)))


def fit_svm(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    c_values: tuple[float, ...] = (0.1, 1.0, 10.0),
    seed: int = 0,
) -> tuple[RBFSVMHead, dict[str, Any]]:
    """Tune ``C`` on validation, calibrate, and return the head and a search report.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(60, 4)), np.repeat([0, 1], 30)
    >>> x[y == 1] += 1.5
    >>> head, report = fit_svm(x[::2], y[::2], x[1::2], y[1::2], c_values=(1.0,))
    >>> report["C"], head.support_vectors.shape[1]
    (1.0, 4)
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    scaler = StandardScaler().fit(train_x)
    tx, vx = scaler.transform(train_x), scaler.transform(val_x)
    search = []
    for c in c_values:
        started = time.perf_counter()
        svc = SVC(C=c, kernel="rbf", gamma="scale", class_weight="balanced").fit(tx, train_y)
        score = _score(svc, vx, val_y)
        search.append(
            {
                "C": c,
                "val_score": score,
                "n_support": int(svc.support_vectors_.shape[0]),
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        log.info("SVM C=%g: validation score %.4f", c, score)
    best = max(search, key=lambda r: (r["val_score"], -r["C"]))
    folds = int(min(5, np.bincount(train_y).min()))
    if folds < 2:
        raise ConfigError("the SVM needs at least 2 training images of every class")
    calibrated = CalibratedClassifierCV(
        SVC(C=best["C"], kernel="rbf", gamma="scale", class_weight="balanced"),
        method="sigmoid",
        cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
        ensemble=False,
    ).fit(tx, train_y)
    head = RBFSVMHead.from_sklearn(scaler, calibrated)
    report = {
        "C": best["C"],
        "criterion": "validation ROC-AUC" if len(np.unique(train_y)) == 2 else "balanced acc.",
        "search": search,
        "gamma": float(head.gamma),
        "n_support": int(head.support_vectors.shape[0]),
        "calibration": f"sigmoid (Platt), {folds}-fold out-of-fold decisions",
    }
    return head, report


def _subsample(rows: np.ndarray, labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` rows, stratified by label (all rows when ``limit`` is 0)."""
    if limit <= 0 or len(rows) <= limit:
        return rows
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = rows[labels == label]
        share = max(2, round(limit * len(members) / len(rows)))
        keep.append(rng.choice(members, size=min(share, len(members)), replace=False))
    return np.sort(np.concatenate(keep))


def _backbone(config: TrainConfig, data: PreparedData) -> tuple[torch.nn.Module, dict, dict, Any]:
    """The embedding network, its ``model`` spec, its init info and its normalisation."""
    if config.head.backbone_checkpoint:
        checkpoint = load_checkpoint(config.head.backbone_checkpoint)
        model = build_model(checkpoint, tta="none")
        init = {
            "source": f"breastpath checkpoint {checkpoint.path}",
            "sha256": checkpoint.meta.weights_sha256,
        }
        norm = (list(checkpoint.meta.mean), list(checkpoint.meta.std))
        return model, checkpoint.meta.model.to_dict(), init, norm
    num_classes = len(data.class_names)
    model, init = create_initial_model(config, num_classes=num_classes)
    spec = {"name": config.model.name, "num_classes": num_classes, "args": dict(config.model.args)}
    return model, spec, init, normalization(config.model.name, config.model.args, data)


def train_svm_hybrid(
    data_dir: str | Path, run_dir: str | Path, config: TrainConfig
) -> dict[str, Any]:
    """Fit the CNN + SVM hybrid on ``data_dir``; write ``best.json`` and friends to ``run_dir``.

    Returns a summary like :func:`breastpath.train.loop.train`'s.
    """
    data, run = open_prepared(data_dir), Path(run_dir)
    train_rows, val_rows = split_rows(data, what="the SVM")
    apply_runtime(config.runtime)
    torch.manual_seed(config.seed)
    device = select_device(config.runtime.device)
    backbone, spec, init, (mean, std) = _backbone(config, data)
    backbone = backbone.to(device).eval()
    start_run(run, config, data)

    started = time.perf_counter()
    head = config.head
    fit_rows = _subsample(train_rows, data.labels[train_rows], head.svm_max_train, config.seed)
    options: dict[str, Any] = {
        "mean": torch.tensor(mean, dtype=torch.float32),
        "std": torch.tensor(std, dtype=torch.float32),
        "device": device,
        "batch_size": config.runtime.eval_batch_size,
    }
    train_x = embed_rows(backbone, data.images, fit_rows, **options)
    val_x = embed_rows(backbone, data.images, val_rows, **options)
    svm, report = fit_svm(
        train_x,
        data.labels[fit_rows],
        val_x,
        data.labels[val_rows],
        c_values=tuple(head.svm_c),
        seed=config.seed,
    )
    report.update(n_train=len(fit_rows), feature_dim=int(train_x.shape[1]))
    args = {
        "backbone": spec,
        "feature_dim": report["feature_dim"],
        "n_support": report["n_support"],
    }
    model = SVMHybrid(num_classes=len(data.class_names), **args)
    model.backbone.load_state_dict(backbone.state_dict())
    model.svm = svm
    report["seconds"] = round(time.perf_counter() - started, 2)

    meta = checkpoint_meta(
        config, data, args, model_name="svm_hybrid", mean=mean, std=std, init=init, svm=report
    )
    probs = predict_rows(
        _with_tta(model, config.model.tta).to(device), data.images, val_rows, **options
    )
    meta, summary = with_threshold(meta, probs, data.labels[val_rows], config)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_checkpoint(run / "best", tensors=tensors, meta=meta.replace(epoch=0))
    (run / "svm.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    log.info("SVM hybrid: C=%g, %d support vectors", report["C"], report["n_support"])
    return {"best_epoch": 0, "epochs_run": 0, **summary, "svm": report}


def _with_tta(model: torch.nn.Module, tta: str) -> torch.nn.Module:
    """``model`` wrapped for test-time augmentation when ``tta`` asks for it."""
    from breastpath.models.tta import TestTimeAugmentation

    return model if tta == "none" else TestTimeAugmentation(model, mode=tta)
