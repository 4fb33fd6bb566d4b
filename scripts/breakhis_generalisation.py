"""BreakHis generalisation study: leave-one-subtype-out and colour robustness, on frozen features.

Which BreakHis subtypes does a benign/malignant classifier fail on when it has never seen them,
and how much of its accuracy is colour? Fine-tuning a CNN per held-out subtype costs hours on a
CPU, so this study uses frozen features (one embedding pass) and a class-balanced logistic
regression, under two patient-level protocols:

* ``cv``:   5-fold patient-level cross-validation over every patient (the estimator of the
  accuracy issue), decisions at probability 0.5 (no threshold tuned on held-out patients);
* ``loso``: leave-one-subtype-out: train on every patient of the other subtypes, score the held-out
  subtype's patients (the fraction of its images given the right benign/malignant label).

Inputs compared (the same backbone, ImageNet EfficientNet-Lite0 at 224 px, offline weights):
``rgb`` (the images as they are), ``grey`` (luminance copied to three channels: no colour at
all), ``haematoxylin`` (the H channel of a Ruifrok colour deconvolution as grey: nuclei only),
and ``chroma`` (no CNN: per-channel mean and standard deviation of RGB, 6 numbers per image:
the colour shortcut alone).

Usage::

    breastpath prepare ../shared/data/breakhis-tiles --magnification 200 --out prepared/tiles200
    python scripts/breakhis_generalisation.py prepared/tiles200 --out runs/bh-generalisation

Writes ``generalisation.json`` and prints Markdown tables (patient-cluster bootstrap 95% CIs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from breastpath.data.cache import PreparedData, open_prepared
from breastpath.evaluate.metrics import binary_metrics, bootstrap_ci
from breastpath.inference.batches import embed_rows
from breastpath.models import create_model, resolve_data_config

VARIANTS = ("rgb", "grey", "haematoxylin", "chroma")


def _grey(images: np.ndarray) -> np.ndarray:
    luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(luma, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _haematoxylin(images: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2hed

    out = np.empty_like(images)
    for i, image in enumerate(images):
        h = rgb2hed(image)[..., 0]
        h = (h - h.min()) / max(float(np.ptp(h)), 1e-6)
        out[i] = np.repeat((255 * (1 - h)).astype(np.uint8)[..., None], 3, axis=-1)
    return out


def _chroma(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1, 3).astype(np.float64) / 255.0
    return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)


def features(data: PreparedData, variant: str, *, batch_size: int = 32) -> np.ndarray:
    """One feature row per cached image for ``variant``."""
    images = np.asarray(data.images)
    if variant == "chroma":
        return _chroma(images)
    model = create_model("efficientnet_lite0", num_classes=2, pretrained=True, input_size=224)
    config = resolve_data_config("efficientnet_lite0", {"input_size": 224})
    assert config is not None  # a timm backbone knows its normalisation
    mean, std = list(config.mean), list(config.std)
    shown = {"rgb": images, "grey": _grey(images), "haematoxylin": _haematoxylin(images)}[variant]
    rows = np.arange(len(shown))
    return embed_rows(
        model,
        shown,
        rows,
        mean=torch.tensor(mean),
        std=torch.tensor(std),
        batch_size=batch_size,
    )


def _fit_predict(x_train, y_train, x_test) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000)
    )
    return model.fit(x_train, y_train).predict_proba(x_test)[:, 1]


def cross_validate(x, y, patients, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold malignant probabilities, folds by patient (stratified by patient label)."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = np.zeros(len(y))
    for train, test in splitter.split(x, y, groups=patients):
        scores[test] = _fit_predict(x[train], y[train], x[test])
    return scores


def leave_one_subtype_out(x, y, subtypes) -> dict[str, dict[str, Any]]:
    """Per held-out subtype: images, patients, and the share labelled correctly at 0.5."""
    out = {}
    for subtype in sorted(set(subtypes)):
        held = subtypes == subtype
        if len(np.unique(y[~held])) < 2:
            continue  # the remaining subtypes hold one class only
        scores = _fit_predict(x[~held], y[~held], x[held])
        correct = (scores >= 0.5) == y[held].astype(bool)
        out[subtype] = {
            "images": int(held.sum()),
            "accuracy": round(float(correct.mean()), 4),
            "mean_malignant_probability": round(float(scores.mean()), 4),
        }
    return out


def _cv_summary(y, scores, patients, *, seed: int) -> dict[str, Any]:
    metrics = binary_metrics(y, scores, threshold=0.5)
    ci = {
        m: bootstrap_ci(y, scores, metric=m, threshold=0.5, groups=patients, n_boot=1000, seed=seed)
        for m in ("accuracy", "balanced_accuracy", "roc_auc")
    }
    return {
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "roc_auc": metrics["roc_auc"],
        "ci95": ci,
    }


def _interval(block: dict[str, Any], metric: str) -> str:
    low, high = block["ci95"][metric]
    return f"{block[metric]:.3f} [{low:.3f}–{high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", type=Path, help="a prepared BreakHis cache (binary task)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    data = open_prepared(args.prepared)
    y = data.labels.astype(np.int64)
    patients = np.asarray(data.patients).astype(str)
    subtypes = np.array([row["subtype"] for row in data.rows])
    result: dict[str, Any] = {"images": len(y), "patients": len(set(patients)), "variants": {}}
    for variant in VARIANTS:
        started = time.perf_counter()
        x = features(data, variant)
        scores = cross_validate(x, y, patients, seed=args.seed)
        result["variants"][variant] = {
            "cv": _cv_summary(y, scores, patients, seed=args.seed),
            "loso": leave_one_subtype_out(x, y, subtypes),
            "seconds": round(time.perf_counter() - started, 1),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generalisation.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print("| input | CV accuracy [95% CI] | CV balanced acc. [95% CI] | CV ROC-AUC [95% CI] |")
    print("| --- | --- | --- | --- |")
    for variant, block in result["variants"].items():
        cv = block["cv"]
        cells = [_interval(cv, m) for m in ("accuracy", "balanced_accuracy", "roc_auc")]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    subtype_names = sorted({s for b in result["variants"].values() for s in b["loso"]})
    print("\n| held-out subtype (images) | " + " | ".join(result["variants"]) + " |")
    print("| --- |" + " --- |" * len(result["variants"]))
    for subtype in subtype_names:
        cells = [
            f"{b['loso'][subtype]['accuracy']:.2f}" if subtype in b["loso"] else "—"
            for b in result["variants"].values()
        ]
        count = next(b["loso"][subtype]["images"] for b in result["variants"].values())
        print(f"| {subtype} ({count}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
