"""Patient-level K-fold cross-validation on a prepared folder, for datasets too small to hold
out a test split worth the name.

1. :func:`patient_folds` deals the patients into ``K`` folds: patient-disjoint, stratified by
   each patient's dominant class (patients of a class spread as evenly as whole patients
   allow, then their images), seeded.
2. For fold ``k``, the fold's patients are the test split; of the rest, a patient-level,
   class-stratified share ``val_frac`` is the validation split (early stopping and the decision
   threshold) and the others train. :func:`~breastpath.data.views.write_split_view` writes
   those splits into a view of the cache (the images are linked, never copied), and
   :func:`breastpath.train.loop.train` trains ``config`` on it.
3. The fold's best checkpoint scores its test patients: out-of-fold (OOF) predictions. Every
   patient is scored exactly once, by a model that never saw it.
4. Metrics per fold and pooled over all OOF predictions, at image and patient level
   (:mod:`breastpath.experiments.crossval_metrics`), with patient-cluster bootstrap 95% CIs.

``cross_validate`` writes ``crossval.json``, ``crossval.md`` and ``oof_predictions.csv`` to
``out_dir`` and keeps each fold's view and run under ``out_dir/fold<k>/``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.config import TrainConfig
from breastpath.data.cache import PreparedData, open_prepared
from breastpath.data.splits import split_patients
from breastpath.errors import ConfigError
from breastpath.experiments.crossval_metrics import format_markdown, summarise
from breastpath.io import atomic_write_text, read_csv, read_json, write_csv, write_json

log = logging.getLogger(__name__)

__all__ = ["cross_validate", "fold_splits", "fold_teacher", "patient_folds"]


def patient_folds(
    patients: Sequence[str], labels: Sequence[int], *, k: int = 5, seed: int = 0
) -> dict[str, int]:
    """Deal patients into ``k`` patient-disjoint folds, stratified by dominant class.

    Patients are taken class by class (a patient's class = its most frequent label), largest
    first with ties broken by a seeded shuffle, and each goes to the fold holding the fewest
    patients of its class, then the fewest images of its class, then the fewest images.

    Parameters
    ----------
    patients, labels
        One entry per image: its patient id and its class index.
    k
        Number of folds, 2 to the number of patients.
    seed
        Seed of the local random generator.

    Returns
    -------
    dict
        ``patient -> fold index`` (0-based).

    Examples
    --------
    >>> folds = patient_folds(["a", "a", "b", "c", "d"], [0, 0, 1, 0, 1], k=2)
    >>> sorted(folds.values())
    [0, 0, 1, 1]
    """
    if len(patients) != len(labels):
        raise ConfigError("patients and labels differ in length")
    unique, inverse = np.unique(np.asarray(patients, dtype=str), return_inverse=True)
    if not 2 <= k <= len(unique):
        raise ConfigError(f"need 2 <= folds <= patients ({len(unique)}), got {k}")
    label_array = np.asarray(labels, dtype=np.int64)
    counts = np.zeros((len(unique), int(label_array.max()) + 1))
    np.add.at(counts, (inverse.reshape(-1), label_array), 1.0)
    dominant = counts.argmax(axis=1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    fold_patients = np.zeros((k, counts.shape[1]))
    fold_images = np.zeros((k, counts.shape[1]))
    owner = np.full(len(unique), -1)
    for cls in np.argsort(np.bincount(dominant, minlength=counts.shape[1]), kind="stable"):
        for patient in order[dominant[order] == cls]:
            key = np.lexsort((fold_images.sum(axis=1), fold_images[:, cls], fold_patients[:, cls]))
            fold = int(key[0])
            owner[patient] = fold
            fold_patients[fold, cls] += 1
            fold_images[fold] += counts[patient]
    return {str(p): int(f) for p, f in zip(unique, owner, strict=True)}


def fold_splits(
    data: PreparedData, fold_of: dict[str, int], fold: int, *, val_frac: float, seed: int
) -> dict[str, str]:
    """``patient -> split`` for one fold: its patients test, the rest train and validation."""
    held_out = {p for p, f in fold_of.items() if f == fold}
    keep = np.array([p not in held_out for p in data.patients])
    inner = split_patients(
        data.patients[keep].tolist(),
        data.labels[keep].tolist(),
        test_frac=0.0,
        val_frac=val_frac,
        seed=seed + fold,
    )
    return {**inner, **{p: "test" for p in held_out}}


def cross_validate(
    data_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    folds: int = 5,
    seed: int = 0,
    val_frac: float = 0.2,
    threshold: str | float = "fold",
    reduce: str = "mean",
    n_boot: int = 1000,
    resume: bool = False,
) -> dict[str, Any]:
    """Cross-validate ``config`` on the prepared folder ``data_dir``; write to ``out_dir``.

    Parameters
    ----------
    data_dir
        A folder written by ``breastpath prepare`` (its own splits are ignored).
    out_dir
        Where ``crossval.json``, ``crossval.md``, ``oof_predictions.csv`` and ``fold<k>/`` go.
    config
        Training options of every fold.
    folds, seed
        Number of patient folds and the seed of the fold and validation assignment.
    val_frac
        Share of each fold's training patients kept for validation.
    threshold
        ``"fold"``: each fold's checkpoint threshold (chosen on its validation split), or a
        fixed probability for every fold (binary tasks).
    reduce
        Patient score from image scores: ``mean``, ``max`` or ``fraction``.
    n_boot
        Bootstrap replicates of the confidence intervals.
    resume
        Reuse folds already finished in ``out_dir`` with the same config and folds.

    Returns
    -------
    dict
        What ``crossval.json`` holds: folds, per-fold and pooled metrics with CIs.
    """
    if threshold != "fold" and not (isinstance(threshold, float) and 0.0 <= threshold <= 1.0):
        raise ConfigError(f"threshold must be 'fold' or a probability, got {threshold!r}")
    if not 0.0 < val_frac < 1.0:
        raise ConfigError(f"val_frac must be in (0, 1), got {val_frac}")
    data = open_prepared(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fold_of = patient_folds(data.patients.tolist(), data.labels.tolist(), k=folds, seed=seed)
    # the training choices (not the runtime): a fold trained on another device is still reused
    settings = {"folds": folds, "seed": seed, "val_frac": val_frac, "train": config.training_dict()}
    settings = json.loads(json.dumps(settings))  # as read back from fold.json (tuples -> lists)
    started = time.perf_counter()
    results = [
        _run_fold(data, out, config, fold_of, fold, settings=settings, resume=resume)
        for fold in range(folds)
    ]
    predictions = [row for result in results for row in result.pop("predictions")]
    predictions.sort(key=lambda r: int(r["row"]))
    report = summarise(
        predictions,
        results,
        class_names=data.class_names,
        threshold=threshold,
        reduce=reduce,
        n_boot=n_boot,
        seed=seed,
        dataset=data.meta.get("dataset"),
    )
    result = {
        "data": _describe(data, patients=len(fold_of)),
        **settings,
        "threshold": threshold,
        # what each fold's validation-chosen threshold maximised (with threshold="fold")
        "threshold_metric": config.stop.threshold_metric,
        "reduce": reduce,
        "n_boot": n_boot,
        "fold_of_patient": fold_of,
        **report,
        "seconds": round(time.perf_counter() - started, 1),
        # per-fold training and scoring time, kept when folds are reused (``resume``)
        "fold_seconds": round(sum(float(r["seconds"]) for r in results), 1),
    }
    write_csv(out / "oof_predictions.csv", predictions, _prediction_fields(data))
    write_json(out / "crossval.json", result)
    atomic_write_text(out / "crossval.md", format_markdown(result))
    return result


def _run_fold(
    data: PreparedData,
    out: Path,
    config: TrainConfig,
    fold_of: dict[str, int],
    fold: int,
    *,
    settings: dict[str, Any],
    resume: bool,
) -> dict[str, Any]:
    """Train and score one fold; returns its summary with its OOF ``predictions`` rows."""
    from breastpath.data.views import write_split_view
    from breastpath.train.loop import train

    fold_dir = out / f"fold{fold}"
    done = fold_dir / "fold.json"
    if resume and done.is_file() and _same_settings(read_json(done).get("settings"), settings):
        log.info("fold %d: reusing %s", fold, done)
        previous = read_json(done)
        return {**previous["result"], "predictions": read_csv(fold_dir / "predictions.csv")}
    splits = fold_splits(data, fold_of, fold, val_frac=settings["val_frac"], seed=settings["seed"])
    split_info = {"method": "patient-level K-fold cross-validation", "fold": fold}
    split_info.update({k: settings[k] for k in ("folds", "seed", "val_frac")})
    view = write_split_view(
        data, fold_dir / "data", splits, split_info={**split_info, "view_of": data.root.name}
    )
    started = time.perf_counter()
    log.info("fold %d/%d: training", fold + 1, settings["folds"])
    test_patients = sorted(p for p, s in splits.items() if s == "test")
    if config.distill.teachers:  # a crossval teacher: this fold's own
        teachers = tuple(fold_teacher(t, fold, test_patients) for t in config.distill.teachers)
        config = replace(config, distill=config.distill.replace(teachers=teachers))
    summary = train(view, fold_dir / "run", config)
    test_rows = np.flatnonzero(np.array([splits[p] == "test" for p in data.patients]))
    probs, threshold = _score(fold_dir / "run" / "best.json", data, test_rows, config)
    predictions = prediction_rows(data, test_rows, probs, fold=fold, threshold=threshold)
    result = {
        "fold": fold,
        "test_patients": test_patients,
        "val_patients": sorted(p for p, s in splits.items() if s == "val"),
        "train_patients": sum(1 for s in splits.values() if s == "train"),
        "best_epoch": summary.get("best_epoch"),
        "epochs_run": summary.get("epochs_run"),
        "threshold": threshold,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_csv(fold_dir / "predictions.csv", predictions, _prediction_fields(data))
    write_json(done, {"settings": settings, "result": result})
    return {**result, "predictions": predictions}


def fold_teacher(teacher: str, fold: int, test_patients: Sequence[str]) -> str:
    """The teacher of fold ``fold``: ``teacher`` itself when it names a checkpoint, or, when it
    is a cross-validation folder, its fold ``fold``'s best checkpoint, which must have held out
    exactly ``test_patients`` (a teacher that saw a fold's test patients would leak their
    labels into the student's out-of-fold scores).

    Raises :class:`ConfigError` when the folder's fold is missing, unfinished or other.
    """
    root = Path(teacher)
    if not (root / "fold0").is_dir():
        return teacher
    done = root / f"fold{fold}" / "fold.json"
    if not done.is_file():
        raise ConfigError(f"teacher {teacher}: fold {fold} is not finished ({done} is missing)")
    held_out = read_json(done).get("result", {}).get("test_patients")
    if sorted(held_out or []) != sorted(test_patients):
        raise ConfigError(
            f"teacher {teacher}: fold {fold} held out other patients than this fold (use the "
            "same --folds, --split-seed and data)"
        )
    return str(root / f"fold{fold}" / "run" / "best.json")


def _describe(data: PreparedData, *, patients: int) -> dict[str, Any]:
    return {
        "prepared": data.root.name,
        "dataset": data.meta["dataset"],
        "task": data.meta["task"],
        "class_names": data.class_names,
        "images": len(data.labels),
        "patients": patients,
        "image_size": list(data.image_size),
    }


def _prediction_fields(data: PreparedData) -> list[str]:
    fields = ["row", "path", "patient", "label", "fold", "threshold"]
    return fields + [f"p_{name}" for name in data.class_names]


def _same_settings(previous: object, settings: dict[str, Any]) -> bool:
    """Whether a finished fold's settings are this run's: the same folds and the same training
    choices, whether its ``train`` block is nested or the flat one of earlier versions (whose
    runtime settings do not count)."""
    if not isinstance(previous, dict) or not isinstance(previous.get("train"), dict):
        return False
    try:
        train = TrainConfig.from_dict(previous["train"]).training_dict()
    except ConfigError:
        return False
    same_train = json.loads(json.dumps(train)) == settings["train"]
    return same_train and all(previous.get(k) == settings[k] for k in ("folds", "seed", "val_frac"))


def prediction_rows(
    data: PreparedData, rows: np.ndarray, probs: np.ndarray, *, fold: int, threshold: float
) -> list[dict[str, Any]]:
    """One out-of-fold prediction per test row: where it came from, its fold's threshold and
    its class probabilities (``p_<class>``)."""
    return [
        {
            "row": int(row),
            "path": data.rows[row]["path"],
            "patient": str(data.patients[row]),
            "label": int(data.labels[row]),
            "fold": fold,
            "threshold": threshold,
            **{f"p_{name}": float(p) for name, p in zip(data.class_names, prob, strict=True)},
        }
        for row, prob in zip(rows, probs, strict=True)
    ]


def _score(
    checkpoint_path: Path, data: PreparedData, rows: np.ndarray, config: TrainConfig
) -> tuple[np.ndarray, float]:
    """Class probabilities of ``rows`` from a fold's best checkpoint, and its threshold."""
    from breastpath.checkpoint import load_checkpoint
    from breastpath.inference.batches import checkpoint_rows
    from breastpath.inference.device import select_device

    checkpoint = load_checkpoint(checkpoint_path)
    probs = checkpoint_rows(
        checkpoint,
        data.images,
        rows,
        device=select_device(config.runtime.device),
        batch_size=config.runtime.eval_batch_size,
    )
    return probs, checkpoint.meta.threshold
