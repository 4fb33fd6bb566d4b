"""``evaluate_checkpoint``: score a split, compute patch- and patient-level metrics, draw the
plots and write ``metrics.json``, ``predictions.csv`` and ``report.html``.

Patch level: the checkpoint's threshold (chosen on validation). Patient level: the model's one
verdict rule (:mod:`breastpath.inference.verdict`) over each patient's patches, against the
truth (positive when any of its patches is): presence (sensitivity, specificity) and extent (the
share of its patches called positive against the true share), by
:func:`breastpath.evaluate.patients.patient_verdict_metrics`; ``patients.csv`` lists both.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import breastpath
from breastpath.choices import InputFit
from breastpath.config import DataConfig
from breastpath.data.cache import PreparedData, is_prepared, open_prepared, read_rows
from breastpath.errors import CheckpointError, InvalidImageError
from breastpath.evaluate.calibration import calibration_summary
from breastpath.evaluate.metrics import binary_metrics, multiclass_metrics
from breastpath.evaluate.patients import patient_verdict_metrics
from breastpath.inference.predictor import Predictor
from breastpath.inference.quality import Quality, assess
from breastpath.inference.score import cancer_score, cancer_truth
from breastpath.io import read_csv, write_csv, write_json

log = logging.getLogger(__name__)

PREDICTION_FIELDS = [
    "row",
    "path",
    "patient",
    "label",
    "label_name",
    "probability",
    "predicted",
    "correct",
    "split",
]


def load_data(
    data: str | Path, *, image_size: tuple[int, int], input_fit: InputFit, workdir: Path
) -> PreparedData:
    """Open a prepared folder, or prepare a raw source (all images, no split) under ``workdir``
    with the model's ``image_size`` and ``input_fit``."""
    from breastpath.data.prepare import prepare

    if is_prepared(data):
        return open_prepared(data)
    target = workdir / "prepared"
    config = DataConfig(image_size=image_size[0], input_fit=input_fit, test_frac=0.0, val_frac=0.0)
    prepare([data], target, config=config)
    return open_prepared(target)


def score_rows(
    predictor: Predictor, data: PreparedData, rows: np.ndarray, *, chunk: int = 4096
) -> np.ndarray:
    """Class probabilities for cache rows, streamed in chunks from the memmap.

    Rows are resized and stain-normalized as the checkpoint needs
    (:meth:`~breastpath.inference.predictor.Predictor.cache_input`).
    """
    outputs = []
    for start in range(0, len(rows), chunk):
        block = predictor.cache_input(
            read_rows(data.images, rows[start : start + chunk]), data.meta
        )
        outputs.append(predictor.predict_proba(block))
    return np.concatenate(outputs) if outputs else np.zeros((0, len(predictor.class_names)))


def assess_rows(data: PreparedData, rows: np.ndarray, *, chunk: int = 4096) -> list[Quality]:
    """The input-quality gate's verdict (:func:`~breastpath.inference.quality.assess`) for
    cache rows, streamed in chunks."""
    verdicts: list[Quality] = []
    for start in range(0, len(rows), chunk):
        verdicts += assess(read_rows(data.images, rows[start : start + chunk]))
    return verdicts


def _gate(
    data: PreparedData, rows: np.ndarray, *, allow_non_tissue: bool, out: Path
) -> tuple[np.ndarray, dict[str, Any]]:
    """The rows the model may label, and a summary of those it may not (also written to
    ``not_assessed.csv``). With ``allow_non_tissue`` every row is kept (research only)."""
    verdicts = assess_rows(data, rows)
    keep = np.array([allow_non_tissue or q.assessed for q in verdicts], dtype=bool)
    flagged = [(int(r), q) for r, q in zip(rows, verdicts, strict=True) if not q.assessed]
    write_csv(
        out / "not_assessed.csv",
        [{"row": r, "path": data.rows[r]["path"], "reason": q.reason} for r, q in flagged],
        ["row", "path", "reason"],
    )
    reasons: dict[str, int] = {}
    for _, q in flagged:
        reasons[str(q.reason)] = reasons.get(str(q.reason), 0) + 1
    summary = {
        "images": len(rows),
        "not_assessed": len(flagged),
        "reasons": reasons,
        "rule": "images the input-quality gate flags (not tissue, not H&E) get no cancer "
        "label and are left out of the metrics"
        + ("; overridden: --allow-non-tissue (research only)" if allow_non_tissue else ""),
    }
    return rows[keep], summary


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    batch_size: int = 64,
    allow_non_tissue: bool = False,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``data`` (prepared folder or raw source); write a report.

    Images the input-quality gate flags get no label, as everywhere else: they are listed in
    ``not_assessed.csv`` and counted under ``quality``, and the metrics cover the others
    (``allow_non_tissue=True`` keeps them, for research).
    """
    predictor = Predictor.from_checkpoint(checkpoint, batch_size=batch_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".data-") as workdir:
        prepared = load_data(
            data,
            image_size=predictor.input_size,
            input_fit=predictor.meta.input_fit,
            workdir=Path(workdir),
        )
        if not is_prepared(data):
            split = "all"
        if prepared.class_names != predictor.class_names:
            raise CheckpointError(
                f"the checkpoint predicts {predictor.class_names} but the data has classes "
                f"{prepared.class_names}"
            )
        rows = prepared.indices(split)
        if len(rows) == 0:
            raise CheckpointError(f"the {split} split of {data} is empty")
        rows, quality = _gate(prepared, rows, allow_non_tissue=allow_non_tissue, out=out)
        if len(rows) == 0:
            raise InvalidImageError(
                f"none of the {quality['images']} images of {data} looks like H&E tissue "
                "(see not_assessed.csv)"
            )
        probs = score_rows(predictor, prepared, rows)
        result = _metrics_and_files(predictor, prepared, rows, probs, out, split=split)
        result["quality"] = quality
    result["run_info"] = {
        "checkpoint": str(predictor.checkpoint.path),
        "data": str(data),
        "split": split,
    }
    write_json(out / "metrics.json", result)
    _write_report(predictor, result, out, checkpoint=checkpoint, data=data, split=split)
    return result


def _metrics_and_files(
    predictor: Predictor,
    data: PreparedData,
    rows: np.ndarray,
    probs: np.ndarray,
    out: Path,
    *,
    split: str,
) -> dict[str, Any]:
    from breastpath.evaluate import plots

    labels = data.labels[rows]
    cancer = cancer_score(probs, predictor.meta)
    truth = cancer_truth(labels, predictor.meta)
    threshold = predictor.threshold
    rule = predictor.verdict_rule(unit="patch")
    verdicts = patient_verdict_metrics(data.patients[rows], truth, cancer, rule=rule)
    per_patient = verdicts.pop("per_patient")
    write_csv(out / "patients.csv", per_patient, list(per_patient[0]) if per_patient else [])
    curve = (
        np.array([r["label"] for r in per_patient], dtype=np.int64),
        np.array([r["extent"] for r in per_patient], dtype=np.float64),
    )
    result: dict[str, Any] = {
        "patch": binary_metrics(truth, cancer, threshold=threshold),
        "patient": patient_section(verdicts),
        "patient_verdict": verdicts,
        "patient_score": f"Patient verdict: {rule.describe()}; extent = the share of its "
        "assessed patches at or above the threshold, against the share labelled positive.",
        "model": predictor.describe(),
        "version": breastpath.__version__,
    }
    if len(predictor.class_names) > 2:
        result["classes"] = multiclass_metrics(labels, probs, class_names=predictor.class_names)
    result["calibration"] = {
        **calibration_summary(truth, cancer),
        "temperature": predictor.meta.temperature,
    }

    predicted = cancer >= threshold
    write_csv(
        out / "predictions.csv",
        [
            {
                "row": int(r),
                "path": data.rows[r]["path"],
                "patient": data.rows[r]["patient"],
                "label": int(t),
                "label_name": data.rows[r]["label_name"],
                "probability": f"{p:.6f}",
                "predicted": int(d),
                "correct": int(d == t),
                "split": data.rows[r]["split"],
            }
            for r, t, p, d in zip(rows, truth, cancer, predicted, strict=True)
        ],
        PREDICTION_FIELDS,
    )

    figures = {
        "roc": plots.plot_roc(
            {"patch": (truth, cancer), "patient (extent)": curve},
            out / "roc.png",
        ),
        "pr": plots.plot_pr(
            {"patch": (truth, cancer), "patient (extent)": curve},
            out / "pr.png",
        ),
        "reliability": plots.plot_reliability(truth, cancer, out / "reliability.png"),
        "confusion_matrix": plots.plot_confusion_matrix(
            np.asarray(result["patch"]["confusion_matrix"]),
            ["not cancer", "cancer"],
            out / "confusion_matrix.png",
            title="Patch level",
        ),
    }
    sample, totals = _grid_sample(truth, cancer, predicted)
    figures["predictions"] = plots.plot_prediction_grid(
        read_rows(data.images, rows[sample]),
        truth[sample],
        cancer[sample],
        threshold=threshold,
        totals=totals,
        class_names=["not cancer", "cancer"],
        path=out / "predictions.png",
    )
    history_file = predictor.checkpoint.path.parent / "history.csv"
    if history_file.is_file():
        history = [{k: _number(v) for k, v in row.items()} for row in read_csv(history_file)]
        figures["training_curves"] = plots.plot_training_curves(
            history, out / "training_curves.png"
        )
    result["plots"] = {k: Path(v).name for k, v in figures.items()}
    return result


#: Captions of the report's figures, by plot key.
PLOT_CAPTIONS = {
    "roc": "ROC curves: patches, and patients ranked by their extent",
    "pr": "Precision-recall curves: patches, and patients ranked by their extent",
    "reliability": "Reliability diagram of the patch probabilities (the bins of the ECE)",
    "confusion_matrix": "Confusion matrix at the checkpoint's threshold (patches)",
    "predictions": "The most confident patches of each outcome (TP, TN, FP, FN)",
    "training_curves": "Training curves: loss, accuracy and AUC per epoch",
}


def patient_section(verdicts: dict[str, Any]) -> dict[str, Any]:
    """The patient level as one flat table section: presence, extent and the patient count."""
    presence, extent = verdicts["presence"], verdicts["extent"]
    return {
        "n": verdicts["patients"],
        "positive_patients": verdicts["positive_patients"],
        "negative_patients": verdicts["negative_patients"],
        "sensitivity": presence["sensitivity"],
        "specificity": presence["specificity"],
        "balanced_accuracy": presence["balanced_accuracy"],
        "extent_mae": extent["mae"],
        "extent_bias": extent["bias"],
        "extent_pearson_r": extent["pearson_r"],
        "extent_icc": extent["icc"],
    }


def _grid_sample(
    truth: np.ndarray, scores: np.ndarray, predicted: np.ndarray, *, per_group: int = 8
) -> tuple[np.ndarray, list[int]]:
    """The most confident rows of each outcome (TP, TN, FP, FN) and the size of each outcome,
    so the grid reads only those images from the cache."""
    picks, totals = [], []
    for t, d in ((1, True), (0, False), (0, True), (1, False)):
        idx = np.flatnonzero((truth == t) & (predicted == d))
        key = -scores[idx] if d else scores[idx]
        picks.append(idx[np.argsort(key, kind="stable")][:per_group])
        totals.append(len(idx))
    return np.sort(np.concatenate(picks)).astype(np.int64), totals


def _calibration_line(calibration: dict[str, Any]) -> str:
    return (
        f"ECE {calibration['ece']:.3f} ({calibration['bins']} equal-width bins), "
        f"Brier {calibration['brier']:.3f}, temperature {calibration['temperature']:g}"
    )


def _number(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def _write_report(
    predictor: Predictor, result: dict[str, Any], out: Path, *, checkpoint, data, split: str
) -> None:
    from breastpath.evaluate.report import write_report

    sections: dict[str, Any] = {
        k: result[k] for k in ("patch", "patient", "classes") if k in result
    }
    write_report(
        out,
        title=f"breastpath evaluation: {predictor.name} on {Path(str(data)).name} ({split})",
        metrics=sections,
        plots={PLOT_CAPTIONS.get(k, k): str(out / v) for k, v in result["plots"].items()},
        run_info={
            "model": predictor.meta.model.name,
            "checkpoint": str(checkpoint),
            "data": str(data),
            "split": split,
            "threshold": predictor.threshold,
            "threshold rule": predictor.meta.threshold_rule or "default 0.5",
            "calibration (patch)": _calibration_line(result["calibration"]),
            "not assessed (quality gate)": f"{result['quality']['not_assessed']} of "
            f"{result['quality']['images']} images {result['quality']['reasons'] or ''}",
            "breastpath version": breastpath.__version__,
        },
        notes=[
            result["patient_score"],
            "A patient is positive when any of its patches is positive.",
            *result["patient_verdict"]["warnings"],
            "Research use only; not a diagnostic device.",
        ],
    )
