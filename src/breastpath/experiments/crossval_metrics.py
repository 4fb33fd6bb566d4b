"""Metrics of cross-validation out-of-fold (OOF) predictions, and their Markdown report.

Binary tasks: an image is predicted positive when its positive-class probability reaches its
fold's threshold. To pool folds whose thresholds differ, each probability ``s`` is rescaled
piecewise-linearly so that its fold's threshold ``t`` maps to 0.5 (``0.5 s / t`` below ``t``,
``0.5 + 0.5 (s - t) / (1 - t)`` above): decisions and within-fold ranking are unchanged. Image
ROC-AUC is computed on the raw probabilities; patient scores (the ``reduce`` of a patient's
rescaled image scores, see :func:`~breastpath.evaluate.aggregate.patient_scores`) are
thresholded at 0.5. Multi-class tasks predict the most probable class; a patient's class is its
most frequent image label and its prediction the argmax of its mean probabilities.

95% intervals: percentile bootstrap resampling whole patients (1,000 replicates by default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from breastpath.evaluate.aggregate import describe_patient_score, patient_scores
from breastpath.evaluate.metrics import binary_metrics, bootstrap_ci, multiclass_metrics
from breastpath.experiments.verdict_cv import cross_fit_rule
from breastpath.inference.verdict import rule_for
from breastpath.io import markdown_table

__all__ = ["centre_scores", "format_markdown", "summarise"]

#: Metrics given with a 95% interval (and a fold mean and sd).
CI_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")
#: Binary metrics also given with a 95% interval.
BINARY_CI_EXTRA = ("f1", "sensitivity", "specificity")
BINARY_EXTRA = ("sensitivity", "specificity", "f1")


#: Columns of the per-fold table of the cross-validation report.
FOLD_HEADER = [
    "fold",
    "test patients",
    "images",
    "threshold",
    "best epoch",
    "image acc.",
    "image bal. acc.",
    "image AUC",
    "patient acc.",
    "patient AUC",
    "seconds",
]


def centre_scores(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Rescale probabilities so that each item's threshold maps to 0.5 (monotone, in [0, 1]).

    Examples
    --------
    >>> centre_scores(np.array([0.1, 0.2, 0.6]), np.array([0.2, 0.2, 0.2])).round(3).tolist()
    [0.25, 0.5, 0.75]
    """
    t = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-6, 1 - 1e-6)
    s = np.asarray(scores, dtype=np.float64)
    low = 0.5 * s / t
    high = 0.5 + 0.5 * (s - t) / (1 - t)
    return np.clip(np.where(s < t, low, high), 0.0, 1.0)


def _arrays(predictions: Sequence[dict[str, Any]], class_names: Sequence[str]):
    labels = np.array([int(r["label"]) for r in predictions], dtype=np.int64)
    probs = np.array([[float(r[f"p_{c}"]) for c in class_names] for r in predictions])
    patients = np.array([str(r["patient"]) for r in predictions])
    folds = np.array([int(r["fold"]) for r in predictions], dtype=np.int64)
    thresholds = np.array([float(r["threshold"]) for r in predictions])
    return labels, probs, patients, folds, thresholds


def _binary_levels(y, raw, centred, patients, *, reduce, n_boot, seed, with_ci):
    image = binary_metrics(y, centred, threshold=0.5)
    ranking = binary_metrics(y, raw, threshold=0.5)
    image.update(roc_auc=ranking["roc_auc"], pr_auc=ranking["pr_auc"])
    agg = patient_scores(patients, y, centred, reduce=reduce, threshold=0.5)
    patient = binary_metrics(agg["y_true"], agg["scores"], threshold=0.5)
    if with_ci:
        options = {"threshold": 0.5, "n_boot": n_boot, "seed": seed}
        image["ci95"] = {
            m: bootstrap_ci(
                y, raw if m == "roc_auc" else centred, metric=m, groups=patients, **options
            )
            for m in (*CI_METRICS, *BINARY_CI_EXTRA)
        }
        patient["ci95"] = {
            m: bootstrap_ci(agg["y_true"], agg["scores"], metric=m, **options)
            for m in (*CI_METRICS, *BINARY_CI_EXTRA)
        }
    return {"image": image, "patient": patient}


def _patient_probs(patients, labels, probs):
    ids, inverse = np.unique(patients, return_inverse=True)
    k = probs.shape[1]
    mean = np.zeros((len(ids), k))
    np.add.at(mean, inverse, probs)
    mean /= np.bincount(inverse)[:, None]
    votes = np.zeros((len(ids), k))
    np.add.at(votes, (inverse, labels), 1)
    return ids, votes.argmax(axis=1), mean


def _multiclass_ci(y, pred, groups, *, n_boot, seed) -> dict[str, tuple]:
    """Cluster-bootstrap intervals of accuracy and balanced accuracy."""
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    correct = (y == pred).astype(float)
    classes = np.unique(y)
    rng = np.random.default_rng(seed)
    acc, bal = [], []
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[inverse]
        acc.append(float((w * correct).sum() / w.sum()))
        recalls = [
            (w * correct)[y == c].sum() / w[y == c].sum() for c in classes if w[y == c].sum() > 0
        ]
        bal.append(float(np.mean(recalls)))
    return {
        name: tuple(float(v) for v in np.quantile(values, [0.025, 0.975]))
        for name, values in (("accuracy", acc), ("balanced_accuracy", bal))
    }


def _multiclass_levels(y, probs, patients, class_names, *, n_boot, seed, with_ci):
    image = multiclass_metrics(y, probs, class_names=class_names)
    ids, patient_y, patient_p = _patient_probs(patients, y, probs)
    patient = multiclass_metrics(patient_y, patient_p, class_names=class_names)
    if with_ci:
        image["ci95"] = _multiclass_ci(y, probs.argmax(1), patients, n_boot=n_boot, seed=seed)
        patient["ci95"] = _multiclass_ci(
            patient_y, patient_p.argmax(1), ids, n_boot=n_boot, seed=seed
        )
    return {"image": image, "patient": patient}


def summarise(
    predictions: Sequence[dict[str, Any]],
    folds: Sequence[dict[str, Any]],
    *,
    class_names: Sequence[str],
    threshold: str | float = "fold",
    reduce: str = "mean",
    n_boot: int = 1000,
    seed: int = 0,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Per-fold and pooled metrics of OOF ``predictions`` (rows as in ``oof_predictions.csv``).

    Returns ``{"per_fold": [...], "pooled": {"image": ..., "patient": ...}, "fold_mean": ...,
    "fold_std": ...}``; pooled metrics carry ``ci95`` (``metric -> (low, high)``). For a binary
    task ``pooled["patient_verdict"]`` holds the task's verdict rule (``dataset``, see
    :func:`breastpath.inference.verdict.rule_for`) with its numbers chosen by cross-fitting
    (:func:`breastpath.experiments.verdict_cv.cross_fit_rule`): presence and extent.
    """
    y, probs, patients, fold_ids, thresholds = _arrays(predictions, class_names)
    binary = len(class_names) == 2
    if threshold != "fold":
        thresholds = np.full(len(y), float(threshold))

    def levels(mask: np.ndarray, *, with_ci: bool) -> dict[str, Any]:
        if binary:
            raw = probs[mask, 1]
            return _binary_levels(
                y[mask],
                raw,
                centre_scores(raw, thresholds[mask]),
                patients[mask],
                reduce=reduce,
                n_boot=n_boot,
                seed=seed,
                with_ci=with_ci,
            )
        return _multiclass_levels(
            y[mask],
            probs[mask],
            patients[mask],
            class_names,
            n_boot=n_boot,
            seed=seed,
            with_ci=with_ci,
        )

    per_fold = []
    for fold in folds:
        mask = fold_ids == int(fold["fold"])
        metrics = levels(mask, with_ci=False) if mask.any() else {}
        per_fold.append({**fold, "images": int(mask.sum()), "metrics": metrics})
    summary: dict[str, dict[str, dict[str, float | None]]] = {"mean": {}, "std": {}}
    for level in ("image", "patient"):
        for stat in summary:
            summary[stat][level] = {}
        for metric in CI_METRICS:
            values = [
                f["metrics"][level][metric]
                for f in per_fold
                if f["metrics"] and f["metrics"][level][metric] is not None
            ]
            summary["mean"][level][metric] = float(np.mean(values)) if values else None
            summary["std"][level][metric] = (
                float(np.std(values, ddof=1)) if len(values) > 1 else None
            )
    pooled = levels(np.ones(len(y), dtype=bool), with_ci=True)
    if binary:
        rule = describe_patient_score(reduce, threshold=0.5)
        rule = rule.replace("patch probabilities", "image probabilities")
        rule = rule.replace("its patches", "its images").replace("its patch", "its image")
        if threshold == "fold":
            rule = rule.replace("image probabilities", "rescaled image scores")
        pooled["patient_rule"] = rule
        base = rule_for({"dataset": dataset, "threshold": 0.5}, unit="patch")
        pooled["patient_verdict"] = cross_fit_rule(
            patients, y, probs[:, 1], fold_ids, base=base, n_boot=n_boot, seed=seed
        )
    else:
        pooled["patient_rule"] = "Patient class = argmax of its mean image probabilities."
    return {
        "per_fold": per_fold,
        "pooled": pooled,
        "fold_mean": summary["mean"],
        "fold_std": summary["std"],
    }


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_ci(block: dict[str, Any], metric: str) -> str:
    low, high = block.get("ci95", {}).get(metric, (None, None))
    interval = "" if low is None else f" ({low:.3f}–{high:.3f})"
    return f"{_fmt(block.get(metric))}{interval}"


def _model_name(train: dict[str, Any]) -> str:
    """The model of a train config, nested (``{"model": {"name": ...}}``) or flat (earlier)."""
    model = train.get("model")
    return str(model.get("name") if isinstance(model, dict) else model)


def verdict_markdown(verdict: dict[str, Any]) -> list[str]:
    """The patient verdict section of ``crossval.md``: the cross-fitted presence and extent."""
    pooled, ci = verdict["pooled"], verdict["pooled"].get("ci95", {})

    def cell(block: str, key: str) -> str:
        value = pooled[block][key]
        if value is None:
            return "n/a"
        low_high = ci.get(key)
        return _fmt(value) + (f" [{_fmt(low_high[0])}–{_fmt(low_high[1])}]" if low_high else "")

    header = ["sensitivity", "specificity", "specificity, tumour-free tissue"]
    header += ["extent MAE", "bias", "Pearson r", "ICC"]
    free = pooled["presence"].get("specificity_tumour_free_tissue")
    free_cell = (
        "n/a" if free is None else f"{_fmt(free)} ({pooled.get('tumour_free_sets', 0)} sets)"
    )
    row = [cell("presence", "sensitivity"), cell("presence", "specificity"), free_cell]
    row += [cell("extent", k) for k in ("mae", "bias", "pearson_r", "icc")]
    folds = "; ".join(
        f"fold {f['fold']}: t {f['threshold']:g}, k {f['min_tiles']}, share {f['min_extent']:g}"
        for f in verdict["per_fold"]
    )
    return [
        "## Patient verdict: presence and extent",
        "",
        f"{verdict['protocol']} ({pooled['patients']} patients: {pooled['positive_patients']} "
        f"positive, {pooled['negative_patients']} negative). Rules per fold: {folds}. "
        f"Chosen on all patients (to ship): {verdict['final_rule']}.",
        "",
        markdown_table(header, [row]),
        "",
    ]


def format_markdown(result: dict[str, Any]) -> str:
    """The Markdown report of :func:`breastpath.experiments.crossval.cross_validate`."""
    data, train = result["data"], result["train"]
    binary = len(data["class_names"]) == 2
    threshold = (
        "each fold's threshold, chosen on its validation patients"
        if result["threshold"] == "fold"
        else f"a fixed threshold of {result['threshold']}"
    )
    lines = [
        f"# Patient-level {result['folds']}-fold cross-validation: {_model_name(train)}",
        "",
        f"Data: `{data['prepared']}` ({data['dataset']}, task {data['task']}): "
        f"{data['images']} images of {data['patients']} patients, classes "
        f"{', '.join(data['class_names'])}, cached at {data['image_size'][0]}x"
        f"{data['image_size'][1]}.",
        f"Folds: patient-disjoint, stratified by each patient's dominant class (seed "
        f"{result['seed']}); in each fold {result['val_frac']:.0%} of the training patients "
        "are held out for validation (early stopping, threshold).",
        f"Decisions: {threshold}." if binary else "Decisions: the most probable class.",
        f"{result['pooled']['patient_rule']} 95% intervals: bootstrap over patients "
        f"({result['n_boot']} replicates).",
        "",
        "## Pooled out-of-fold predictions",
        "",
    ]
    extra = BINARY_EXTRA if binary else ("f1_macro",)
    header = ["level", "n", "accuracy (95% CI)", "balanced accuracy (95% CI)", "ROC-AUC (95% CI)"]
    pooled = []
    for level in ("image", "patient"):
        block = result["pooled"][level]
        cells = [level, str(block["n"]), *(_with_ci(block, m) for m in CI_METRICS)]
        pooled.append([*cells, *(_with_ci(block, m) for m in extra)])
    lines += [markdown_table([*header, *extra], pooled), ""]
    if "patient_verdict" in result["pooled"]:
        lines += verdict_markdown(result["pooled"]["patient_verdict"])
    lines += ["## Per fold", ""]
    folds = []
    for fold in result["per_fold"]:
        m = fold["metrics"]
        folds.append(
            [
                fold["fold"],
                len(fold["test_patients"]),
                fold["images"],
                _fmt(fold["threshold"]) if binary else "—",
                f"{fold['best_epoch']}/{fold['epochs_run']}",
                _fmt(m["image"]["accuracy"]),
                _fmt(m["image"]["balanced_accuracy"]),
                _fmt(m["image"]["roc_auc"]),
                _fmt(m["patient"]["accuracy"]),
                _fmt(m["patient"]["roc_auc"]),
                f"{fold['seconds']:.0f}",
            ]
        )
    mean, std = result["fold_mean"], result["fold_std"]

    def ms(level: str, metric: str) -> str:
        if mean[level][metric] is None:
            return "n/a"
        return f"{_fmt(mean[level][metric])} ± {_fmt(std[level][metric])}"

    folds.append(
        ["mean ± sd", "", "", "", ""]
        + [ms("image", k) for k in ("accuracy", "balanced_accuracy", "roc_auc")]
        + [ms("patient", "accuracy"), ms("patient", "roc_auc"), ""]
    )
    lines += [
        markdown_table(FOLD_HEADER, folds),
        "",
        "Training options: `"
        + ", ".join(f"{k}={v}" for k, v in train.items() if k not in ("progress",))
        + "`",
        "",
        f"Total time: {result['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)
