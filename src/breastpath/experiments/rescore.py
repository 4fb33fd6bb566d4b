"""Score finished cross-validation folds again: other test-time augmentation, the last epoch
instead of the best, or an ensemble of several runs over the same folds, without training.

For every fold ``k`` of the cross-validation folder(s) written by
:func:`~breastpath.experiments.crossval.cross_validate`, each member's fold checkpoint
(``fold<k>/run/best.json`` or ``last.json``) scores the fold's **validation** patients and its
**test** patients. Members' class probabilities are averaged; the decision threshold is then
chosen on the validation patients alone (as :func:`breastpath.train.loop.train` does), and
applied to the test patients: the held-out patients still decide nothing. Metrics pool the
out-of-fold predictions exactly as ``crossval`` does
(:func:`breastpath.experiments.crossval_metrics.summarise`).

Ensemble members must share folds (same data, ``--folds`` and ``--split-seed``); they differ
in training seed or recipe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.choices import THRESHOLD_METRICS, TTA_MODES, check_choice
from breastpath.data.cache import PreparedData, open_prepared
from breastpath.errors import ConfigError
from breastpath.experiments.crossval import prediction_rows
from breastpath.experiments.crossval_metrics import format_markdown, summarise
from breastpath.io import atomic_write_text, read_json, write_csv, write_json

__all__ = ["CHECKPOINTS", "RESCORE_RUNTIMES", "fold_probabilities", "rescore_crossval"]

#: Which checkpoint of a fold run is scored.
CHECKPOINTS = ("best", "last")
#: What scores the folds: the float network, or it quantized on the fold's training patients.
RESCORE_RUNTIMES = ("torch", "int8")


def _load_runs(cv_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """``crossval.json`` of each member; refuse members whose folds differ."""
    if not cv_dirs:
        raise ConfigError("give at least one cross-validation folder")
    runs = []
    for cv_dir in cv_dirs:
        path = Path(cv_dir) / "crossval.json"
        if not path.is_file():
            raise ConfigError(f"{cv_dir}: no crossval.json (not a finished cross-validation)")
        runs.append({**read_json(path), "dir": Path(cv_dir)})
    first = runs[0]
    for run in runs[1:]:
        if (
            run["fold_of_patient"] != first["fold_of_patient"]
            or run["val_frac"] != first["val_frac"]
        ):
            raise ConfigError(f"{run['dir']}: its folds differ from {first['dir']}'s")
    return runs


def fold_probabilities(
    fold_dir: Path,
    data: PreparedData,
    rows: np.ndarray,
    *,
    checkpoint: str = "best",
    tta: str = "none",
    runtime: str = "torch",
    batch_size: int = 256,
) -> np.ndarray:
    """Class probabilities of ``rows`` from one fold's ``checkpoint`` with ``tta`` (CPU).

    ``runtime="int8"`` first quantizes the fold's model
    (:func:`~breastpath.inference.quantize.quantize_int8`), calibrated on the fold's own training
    patients, as a shipped model is calibrated on its training data. It is refused with
    :class:`ConfigError` on a CPU whose int8 kernels are inexact
    (:func:`~breastpath.inference.onnx.int8_kernels_exact`): there the estimate would measure
    saturated kernels that the served model does not use.
    """
    import dataclasses

    from breastpath.checkpoint import load_checkpoint
    from breastpath.inference.batches import checkpoint_rows

    state = load_checkpoint(fold_dir / "run" / f"{checkpoint}.json")
    if runtime == "int8":
        if tta != "none":
            raise ConfigError("the int8 runtime scores without test-time augmentation")
        from breastpath.inference import onnx

        if not onnx.int8_kernels_exact():
            raise ConfigError(
                "onnxruntime's int8 kernels are inexact on this CPU (x86 without VNNI), where "
                "the served model runs its float network: rescore int8 on a CPU with "
                "AVX512-VNNI or AVX-VNNI, or use runtime onnx"
            )
        from breastpath.inference.quantize import (
            CALIBRATION_SAMPLES,
            calibration_rows,
            quantize_int8,
        )

        chosen = calibration_rows(data.indices("train"), samples=CALIBRATION_SAMPLES)
        int8 = quantize_int8(state, np.asarray(data.images[chosen]))
        state = dataclasses.replace(state, int8=int8)
    return checkpoint_rows(
        state, data.images, rows, tta=tta, runtime=runtime, batch_size=batch_size
    )


def _rescore_fold(
    runs: list[dict[str, Any]],
    fold: int,
    *,
    checkpoint: str,
    tta: str,
    runtime: str,
    threshold_metric: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from breastpath.checkpoint import default_cancer_classes
    from breastpath.train.run import choose_cancer_threshold

    view = open_prepared(runs[0]["dir"] / f"fold{fold}" / "data")
    val_rows, test_rows = view.indices("val"), view.indices("test")
    rows = np.concatenate([val_rows, test_rows])
    probs = np.mean(
        [
            fold_probabilities(
                run["dir"] / f"fold{fold}",
                view,
                rows,
                checkpoint=checkpoint,
                tta=tta,
                runtime=runtime,
            )
            for run in runs
        ],
        axis=0,
    )
    val_probs, test_probs = probs[: len(val_rows)], probs[len(val_rows) :]
    cancer = list(default_cancer_classes(view.class_names))
    threshold, _ = choose_cancer_threshold(
        val_probs, view.labels[val_rows], cancer, criterion=threshold_metric
    )
    predictions = prediction_rows(view, test_rows, test_probs, fold=fold, threshold=threshold)
    previous = runs[0]["per_fold"][fold]
    result = {
        "fold": fold,
        "test_patients": previous["test_patients"],
        "val_patients": previous["val_patients"],
        "train_patients": previous["train_patients"],
        "best_epoch": previous["best_epoch"] if checkpoint == "best" else previous["epochs_run"],
        "epochs_run": previous["epochs_run"],
        "threshold": threshold,
        "seconds": 0.0,
    }
    return result, predictions


def rescore_crossval(
    cv_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    checkpoint: str = "best",
    tta: str = "none",
    runtime: str = "torch",
    threshold_metric: str = "balanced_accuracy",
    reduce: str = "mean",
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Score the folds of ``cv_dirs`` again (see the module docstring); write to ``out_dir``.

    Parameters
    ----------
    cv_dirs
        One or more finished ``breastpath crossval`` folders over the same folds; more than
        one is an ensemble (mean of the members' probabilities).
    out_dir
        Where ``crossval.json``, ``crossval.md`` and ``oof_predictions.csv`` go.
    checkpoint
        ``"best"`` (each fold's early-stopping choice) or ``"last"`` (its final epoch: the
        estimate for a model trained a fixed number of epochs without validation).
    tta
        Test-time augmentation of every member: ``none``, ``flips`` or ``dihedral``.
    runtime
        ``torch``, or ``int8``: each fold's model quantized on its own training patients and
        scored as the ``int8`` runtime serves it (the estimate for a quantized shipped model).
    threshold_metric
        What each fold's validation-chosen threshold maximises.
    reduce, n_boot
        As for :func:`~breastpath.experiments.crossval.cross_validate`.

    Returns
    -------
    dict
        What ``crossval.json`` holds, with ``members``, ``checkpoint`` and ``tta`` added.
    """
    check_choice(checkpoint, CHECKPOINTS, what="checkpoint")
    check_choice(tta, TTA_MODES, what="tta")
    check_choice(runtime, RESCORE_RUNTIMES, what="runtime")
    check_choice(threshold_metric, THRESHOLD_METRICS, what="threshold_metric")
    runs = _load_runs(cv_dirs)
    started = time.perf_counter()
    folds, predictions = [], []
    for fold in range(int(runs[0]["folds"])):
        result, rows = _rescore_fold(
            runs,
            fold,
            checkpoint=checkpoint,
            tta=tta,
            runtime=runtime,
            threshold_metric=threshold_metric,
        )
        folds.append(result)
        predictions.extend(rows)
    predictions.sort(key=lambda r: int(r["row"]))
    class_names = runs[0]["data"]["class_names"]
    report = summarise(
        predictions, folds, class_names=class_names, reduce=reduce, n_boot=n_boot, seed=0
    )
    result = {
        **{k: runs[0][k] for k in ("data", "folds", "seed", "val_frac", "train")},
        "members": [str(run["dir"]) for run in runs],
        "checkpoint": checkpoint,
        "tta": tta,
        "runtime": runtime,
        "threshold": "fold",
        "threshold_metric": threshold_metric,
        "reduce": reduce,
        "n_boot": n_boot,
        "fold_of_patient": runs[0]["fold_of_patient"],
        **report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["row", "path", "patient", "label", "fold", "threshold"]
    write_csv(out / "oof_predictions.csv", predictions, fields + [f"p_{c}" for c in class_names])
    write_json(out / "crossval.json", result)
    note = (
        f"\nRescored: {len(runs)} member(s), checkpoint `{checkpoint}`, TTA `{tta}`, "
        f"runtime `{runtime}`; "
        f"thresholds chosen again on each fold's validation patients (maximising "
        f"`{threshold_metric}`).\n"
    )
    atomic_write_text(out / "crossval.md", format_markdown(result) + note)
    return result
