"""Probes on frozen embeddings, patient-level cross-validated, saved as a usable checkpoint.

Heads (``--head``):

* ``linear`` — eva's protocol: one linear layer on the frozen embeddings, cross-entropy, AdamW
  (lr 3e-4, batch 256), up to 12,500 steps, evaluated once per epoch on the validation
  patients; training stops when validation balanced accuracy has not improved for 1,250 steps
  and the best state is kept;
* ``logreg`` — L2 logistic regression (scikit-learn, standardised features; the scaler is folded
  into one linear layer);
* ``svm`` — an RBF SVM with ``C`` tuned on validation and Platt calibration
  (:func:`breastpath.train.hybrid.fit_svm`);
* ``knn`` — cosine k-nearest neighbours over the training embeddings.

Protocol: the patients are dealt into K stratified folds
(:func:`breastpath.experiments.crossval.patient_folds`); in fold k its patients are held out and
the others split, by patient, into train and validation; the head is fitted on train, the
decision threshold is chosen on the validation cancer score, and the held-out patients are
scored. Pooled out-of-fold metrics carry patient-cluster bootstrap 95% intervals
(:mod:`breastpath.experiments.crossval_metrics`). The saved checkpoint is refitted the same way
on all patients (one patient-level validation split) and is a ``probe`` model: the backbone is
rebuilt from its recorded weights (sha256 checked) and the head loaded from the checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from breastpath.choices import PROBE_HEADS
from breastpath.data.splits import split_patients
from breastpath.errors import ConfigError
from breastpath.experiments.embed import Embeddings, open_embeddings


@dataclass(frozen=True)
class ProbeOptions:
    """Options of a probe (eva's linear protocol by default)."""

    head: str = "linear"
    lr: float = 3e-4
    batch_size: int = 256
    max_steps: int = 12_500
    patience_steps: int = 1_250
    weight_decay: float = 0.0
    knn_k: int = 20
    logreg_c: float = 1.0
    svm_c: tuple[float, ...] = (0.1, 1.0, 10.0)
    svm_limit: int = 4000
    seed: int = 0


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """scikit-learn's balanced accuracy (mean recall over the classes of ``y``), without its
    warning when ``pred`` has a class ``y`` lacks."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


@dataclass
class FittedHead:
    """A fitted head module and the ``probe`` model arguments that rebuild it."""

    module: nn.Module
    args: dict[str, Any]
    report: dict[str, Any]


def fit_linear(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    *,
    classes: int,
    options: ProbeOptions,
) -> FittedHead:
    """eva's linear probe (see the module docstring); one torch thread (the matrices are tiny)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_linear(x, y, vx, vy, classes=classes, options=options)
    finally:
        torch.set_num_threads(threads)


def _fit_linear(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    *,
    classes: int,
    options: ProbeOptions,
) -> FittedHead:
    gen = torch.Generator().manual_seed(options.seed)
    head = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=gen)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    tvx = torch.from_numpy(vx)
    per_epoch = max(1, int(np.ceil(len(x) / options.batch_size)))
    best, best_state, best_step, step = -1.0, head.state_dict(), 0, 0
    while step < options.max_steps and step - best_step < options.patience_steps:
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), options.batch_size):
            idx = order[start : start + options.batch_size]
            loss = nn.functional.cross_entropy(head(tx[idx]), ty[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= options.max_steps:
                break
        with torch.no_grad():
            score = _balanced_accuracy(vy, head(tvx).argmax(1).numpy())
        if score > best:
            best, best_step = score, step
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    report = {
        "steps": step,
        "best_step": best_step,
        "val_balanced_accuracy": best,
        "steps_per_epoch": per_epoch,
    }
    return FittedHead(head, {"head": "linear"}, report)


def fit_logreg(x: np.ndarray, y: np.ndarray, *, classes: int, options: ProbeOptions) -> FittedHead:
    """L2 logistic regression on standardised features, folded into one linear layer."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0) + 1e-6
    model = LogisticRegression(C=options.logreg_c, max_iter=2000).fit((x - mean) / scale, y)
    coef, intercept = model.coef_, model.intercept_
    if classes == 2 and coef.shape[0] == 1:  # sklearn's binary form: logit of class 1
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    head = nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(coef / scale))
        head.bias.copy_(torch.from_numpy(intercept - (coef / scale) @ mean))
    return FittedHead(head, {"head": "linear"}, {"C": options.logreg_c, "solver": "lbfgs"})


def fit_knn(x: np.ndarray, y: np.ndarray, *, classes: int, options: ProbeOptions) -> FittedHead:
    """A cosine kNN head over the (normalised) training embeddings."""
    from breastpath.models.probe import KNNHead

    head = KNNHead(num_classes=classes, feature_dim=x.shape[1], size=len(x), k=options.knn_k)
    with torch.no_grad():
        head.bank.copy_(nn.functional.normalize(torch.from_numpy(x), dim=1))
        head.labels.copy_(torch.from_numpy(y))
    args = {"head": "knn", "knn_k": options.knn_k, "knn_size": len(x)}
    return FittedHead(head, args, {"k": options.knn_k, "bank": len(x)})


def fit_svm_head(
    x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray, *, options: ProbeOptions
) -> FittedHead:
    """An RBF SVM (``C`` tuned on validation, Platt-calibrated) on at most ``svm_limit`` rows."""
    from breastpath.train.hybrid import fit_svm

    if len(x) > options.svm_limit:
        keep = np.random.default_rng(options.seed).choice(len(x), options.svm_limit, replace=False)
        x, y = x[np.sort(keep)], y[np.sort(keep)]
    head, report = fit_svm(x, y, vx, vy, c_values=options.svm_c, seed=options.seed)
    args = {"head": "svm", "n_support": int(head.support_vectors.shape[0])}
    return FittedHead(head, args, report)


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    *,
    classes: int,
    options: ProbeOptions,
) -> FittedHead:
    """Fit the head ``options.head`` on train ``(x, y)``, validating on ``(vx, vy)``."""
    if options.head == "linear":
        return fit_linear(x, y, vx, vy, classes=classes, options=options)
    if options.head == "logreg":
        return fit_logreg(x, y, classes=classes, options=options)
    if options.head == "knn":
        return fit_knn(x, y, classes=classes, options=options)
    if options.head == "svm":
        return fit_svm_head(x, y, vx, vy, options=options)
    raise ConfigError(f"unknown probe head {options.head!r}; use one of {', '.join(PROBE_HEADS)}")


def head_probs(head: nn.Module, x: np.ndarray) -> np.ndarray:
    """Class probabilities of a fitted head (softmax of its output, as the Predictor does)."""
    head.eval()
    with torch.no_grad():
        out = head(torch.from_numpy(x))
    return torch.softmax(out.float(), 1).numpy().astype(np.float64)


def _inner_split(emb: Embeddings, keep: np.ndarray, *, val_frac: float, seed: int):
    owner = split_patients(
        emb.patients[keep].tolist(),
        emb.labels[keep].tolist(),
        test_frac=0.0,
        val_frac=val_frac,
        seed=seed,
    )
    split = np.array([owner.get(p, "") for p in emb.patients])
    return keep & (split == "train"), keep & (split == "val")


def fit_and_threshold(
    emb: Embeddings,
    x: np.ndarray,
    keep: np.ndarray,
    *,
    val_frac: float,
    seed: int,
    options: ProbeOptions,
    cancer: tuple[int, ...],
) -> tuple[FittedHead, float]:
    """Fit on the train patients of ``keep``; threshold on its validation patients."""
    from breastpath.evaluate.metrics import choose_threshold
    from breastpath.inference.score import cancer_score, cancer_truth

    train, val = _inner_split(emb, keep, val_frac=val_frac, seed=seed)
    if not val.any() or len(np.unique(emb.labels[train])) < 2:
        raise ConfigError("too few patients for a train/validation split inside the fold")
    classes = len(emb.class_names)
    fitted = fit_head(
        x[train], emb.labels[train], x[val], emb.labels[val], classes=classes, options=options
    )
    probs = head_probs(fitted.module, x[val])
    truth = cancer_truth(emb.labels[val], cancer)
    threshold = 0.5
    if len(np.unique(truth)) == 2:
        threshold = choose_threshold(truth, cancer_score(probs, cancer))
    fitted.report.update(n_train=int(train.sum()), n_val=int(val.sum()))
    return fitted, float(threshold)


def cross_validate_probe(
    emb: Embeddings,
    *,
    folds: int,
    val_frac: float,
    options: ProbeOptions,
    n_boot: int,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Patient-level K-fold CV of the probe; ``(summary, out-of-fold rows)``."""
    from breastpath.checkpoint import default_cancer_classes
    from breastpath.experiments.crossval import patient_folds
    from breastpath.experiments.crossval_metrics import summarise

    x = np.asarray(emb.vectors, dtype=np.float32)
    cancer = default_cancer_classes(emb.class_names)
    fold_of = patient_folds(emb.patients.tolist(), emb.labels.tolist(), k=folds, seed=options.seed)
    fold_ids = np.array([fold_of[p] for p in emb.patients])
    rows: list[dict[str, Any]] = []
    fold_info: list[dict[str, Any]] = []
    for fold in range(folds):
        started = time.perf_counter()
        test = fold_ids == fold
        fitted, threshold = fit_and_threshold(
            emb,
            x,
            ~test,
            val_frac=val_frac,
            seed=options.seed + fold,
            options=options,
            cancer=cancer,
        )
        probs = head_probs(fitted.module, x[test])
        for i, p in zip(np.flatnonzero(test), probs, strict=True):
            row = {
                "row": int(i),
                "patient": emb.patients[i],
                "label": int(emb.labels[i]),
                "fold": fold,
                "threshold": threshold,
            }
            row.update({f"p_{c}": float(v) for c, v in zip(emb.class_names, p, strict=True)})
            rows.append(row)
        fold_info.append(
            {
                "fold": fold,
                "threshold": threshold,
                "patients": len(set(emb.patients[test])),
                "seconds": round(time.perf_counter() - started, 2),
                "head": fitted.report,
            }
        )
        if progress is not None:
            progress(f"fold {fold + 1}/{folds} done")
    summary = summarise(
        rows, fold_info, class_names=emb.class_names, n_boot=n_boot, seed=options.seed
    )
    return summary, rows


def probe(
    emb_dir: str | Path,
    out_dir: str | Path,
    *,
    options: ProbeOptions | None = None,
    folds: int = 5,
    val_frac: float = 0.2,
    n_boot: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Cross-validate a probe on ``emb_dir`` and save the refitted ``probe`` checkpoint.

    Writes ``probe.json``/``probe.safetensors`` (the checkpoint), ``probe_cv.json``,
    ``probe_cv.md`` and ``oof_predictions.csv`` to ``out_dir``; returns the CV summary.
    """
    from breastpath.experiments.probe_checkpoint import format_probe_markdown, save_probe
    from breastpath.io import atomic_write_text, write_csv, write_json

    options = options or ProbeOptions()
    if options.head not in PROBE_HEADS:
        raise ConfigError(f"unknown probe head {options.head!r}; use {', '.join(PROBE_HEADS)}")
    emb = open_embeddings(emb_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, rows = cross_validate_probe(
        emb, folds=folds, val_frac=val_frac, options=options, n_boot=n_boot, progress=progress
    )
    result = {
        "embeddings": str(emb.root),
        "backbone": emb.meta["backbone"],
        "folds": folds,
        "val_frac": val_frac,
        "options": _plain(options),
        **summary,
    }
    write_json(out / "probe_cv.json", result)
    atomic_write_text(out / "probe_cv.md", format_probe_markdown(result))
    write_csv(out / "oof_predictions.csv", rows, list(rows[0]))
    save_probe(out / "probe", emb, options=options, val_frac=val_frac, cv=summary)
    return result


def _plain(options: ProbeOptions) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()}
