"""Rebuild the bundled default model and its model card from the IDC images.

    python scripts/build_default_model.py --idc ../shared/data/idc \
        --config scripts/default_model.yaml

Prepares the IDC sample with the default patient-level split (seed 0), trains CancerNet with
``--config`` (default: the TrainConfig defaults), evaluates the best checkpoint on the test split
and copies it to ``src/breastpath/assets/`` with ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from breastpath.config import DataConfig, TrainConfig, load_yaml
from breastpath.data.cache import open_prepared
from breastpath.data.prepare import prepare
from breastpath.evaluate.metrics import bootstrap_ci
from breastpath.evaluate.pipeline import evaluate_checkpoint
from breastpath.io import atomic_write_text, read_csv
from breastpath.checkpoint import build_model, load_checkpoint, save_checkpoint
from breastpath.train.loop import train

ASSETS = Path(__file__).resolve().parents[1] / "src" / "breastpath" / "assets"
ANCHORS = {
    "Cruz-Roa et al. 2014": (0.7180, 0.8423),
    "Janowczyk & Madabhushi 2016": (0.7648, 0.8468),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idc", required=True, help="IDC folder or zip")
    parser.add_argument("--work", default="build/default")
    parser.add_argument("--config", default=None, help="YAML of TrainConfig options")
    parser.add_argument("--skip-train", action="store_true", help="reuse WORK/run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    work = Path(args.work)
    prepared, run, report = work / "prepared", work / "run", work / "eval"
    if not (prepared / "meta.json").is_file():
        prepare([args.idc], prepared, config=DataConfig(seed=0))
    options = load_yaml(args.config) if args.config else {}
    config = TrainConfig.from_dict({**options, "progress": False})
    if not args.skip_train:
        train(prepared, run, config)
    result = evaluate_checkpoint(run, prepared, report, split="test")

    best = load_checkpoint(run / "best.json")
    meta = {k: v for k, v in best.meta.items() if k not in ("format", "weights_sha256")}
    meta["name"] = "cancernet-idc"
    meta["data"] = {**meta["data"], "prepared": Path(meta["data"]["prepared"]).name}
    meta["metrics"] = {
        **meta.get("metrics", {}),
        "test": {k: result[k] for k in ("patch", "patient")},
    }
    ASSETS.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ASSETS / "cancernet_idc", tensors=best.model_state_prefixed(), meta=meta)
    atomic_write_text(ASSETS / "MODEL_CARD.md", model_card(meta, prepared, report, config))
    print(json.dumps({k: result[k] for k in ("patch", "patient")}, indent=2))


def model_card(meta: dict, prepared: Path, report: Path, config: TrainConfig) -> str:
    data = open_prepared(prepared)
    summary = json.loads((prepared / "summary.json").read_text())
    rows = read_csv(report / "predictions.csv")
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    groups = np.array([r["patient"] for r in rows])
    threshold = meta["threshold"]
    test = meta["metrics"]["test"]
    n_params = sum(
        param.numel()
        for param in build_model(load_checkpoint(ASSETS / "cancernet_idc")).parameters()
    )

    def ci(metric: str) -> str:
        low, high = bootstrap_ci(
            y, p, metric=metric, threshold=threshold, groups=groups, n_boot=1000, seed=0
        )
        return f"{low:.3f}–{high:.3f}"

    lines = [
        "# Model card: cancernet-idc (the bundled `default` model)",
        "",
        "**Research use only. Not a diagnostic device; not validated for clinical use.**",
        "",
        "## What it does",
        "Scores a 50x50 RGB patch of H&E-stained breast tissue (scanned at 40x, downsampled as in",
        "the Kaggle IDC set) with the probability of invasive ductal carcinoma (IDC).",
        f"Decision threshold {threshold:.4f}, {meta.get('threshold_rule', '')}.",
        "",
        "## Model",
        f"CancerNet (depthwise-separable CNN), {n_params:,} parameters, "
        f"input 50x50, per-channel mean {meta['mean']} and std {meta['std']} (training split).",
        "",
        "## Data",
        "A 4% per-patient sample of the Kaggle *Breast Histopathology Images* set (Janowczyk &",
        f"Madabhushi 2016; CC0): {summary['images']:,} patches from {summary['patients']}",
        f"patients. Split by patient (seed {meta['data']['split']['seed']}, 20% test, then 10% of",
        "the rest for validation, stratified by class); no patient is in two splits.",
        "",
        "| split | patches | patients | non-IDC | IDC |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ("train", "val", "test"):
        part = summary["splits"][name]
        lines.append(
            f"| {name} | {part['images']:,} | {part['patients']} | "
            f"{part['classes']['non-IDC']:,} | {part['classes']['IDC']:,} |"
        )
    lines += [
        "",
        f"{summary['padded']} edge patches smaller than 50x50 were padded with white.",
        "",
        "## Training",
        f"`{json.dumps({k: v for k, v in config.to_dict().items() if k != 'progress'})}`",
        "",
        f"Best epoch (by {config.monitor} on the validation split): {meta.get('epoch')}.",
        "",
        "## Results on the test split (patients never seen in training)",
        "Patch level: every test patch. Patient level: patient score = mean of its patch",
        "probabilities; a patient is positive when any of its patches is IDC. 95% intervals: "
        "patient-cluster bootstrap (1,000 resamples).",
        "",
        "| metric | patch | 95% CI (patch) | patient |",
        "| --- | --- | --- | --- |",
    ]
    for metric in (
        "balanced_accuracy",
        "f1",
        "roc_auc",
        "pr_auc",
        "accuracy",
        "sensitivity",
        "specificity",
        "precision",
    ):
        patient_value = test["patient"][metric]
        lines.append(
            f"| {metric} | {test['patch'][metric]:.4f} | {ci(metric)} | "
            f"{'n/a' if patient_value is None else f'{patient_value:.4f}'} |"
        )
    lines += [
        "",
        f"Patch confusion matrix [[TN, FP], [FN, TP]]: {test['patch']['confusion_matrix']}.",
        "",
        f"Patient level: {test['patient']['n_positive']} of {test['patient']['n']} test patients "
        "have IDC patches, so patient-level specificity and ROC-AUC rest on "
        f"{test['patient']['n_negative']} negative patient(s); a mean patch probability above the "
        "patch threshold marks only patients whose sampled tissue is mostly tumour. Read the "
        "patch-level figures as the headline.",
        "",
        "Published patient-disjoint anchors on the full set (F1 / balanced accuracy): "
        + "; ".join(f"{k} {f:.4f} / {b:.4f}" for k, (f, b) in ANCHORS.items())
        + ". They were trained on about 25x more patches; the test split here is small "
        f"({data.indices('test').size:,} patches, {test['patient']['n']} patients), so compare "
        "with the intervals in mind.",
        "",
        "## Limits",
        "- Trained on one public dataset from one institution's scanner and staining; expect lower",
        "  accuracy on other sites until stain normalization and site validation are done.",
        "- Patch-level model: it does not see tissue context beyond 50x50 pixels.",
        "- Only IDC vs non-IDC; other lesions are out of scope.",
        "- The threshold was chosen on 15 validation patients; recalibrate for a new population.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
