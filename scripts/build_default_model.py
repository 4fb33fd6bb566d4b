"""Rebuild the bundled default model (IDC) and its model card from the IDC images.

    python scripts/build_default_model.py --idc ../shared/data/idc

The served model is EfficientNet-Lite0 fine-tuned from offline ImageNet weights on the 50x50
patches (``--config``, default ``scripts/default_model.yaml``), served by the ``int8`` runtime:
its network quantized after training (:mod:`breastpath.inference.quantize`), which is what lets it
score at more than 2,000 patches/s on 2 CPU cores. ``--runtime torch`` ships the float network
instead; ``--teacher-config`` (repeatable) makes the served model a *student* distilled from
those teachers (:mod:`breastpath.train.distill`; ``scripts/student_cancernet.yaml`` with
``scripts/teacher_lite0.yaml`` and ``scripts/teacher_cancernet.yaml`` is the earlier CancerNet
default).

1. Prepares the IDC sample with every patient in the training split (no validation or test
   split: the estimate comes from cross-validation, the model from all development patients).
2. Cross-validates each teacher, if any (``breastpath crossval``, patient-level, 5 folds seeded
   0; in each fold 20% of the training patients validate: early stopping and the threshold).
3. Cross-validates the served recipe on the same folds (a student: each fold taught by the
   teachers of that fold, which never saw its test patients). The folds are rescored at their
   **last** epoch and with the served runtime (``int8``: each fold's model quantized on its own
   training patients; :func:`breastpath.experiments.rescore.rescore_crossval`), because the
   final model has no validation split to pick an epoch with: that rescoring is the card's
   estimate.
4. Trains each teacher on all patients, then the served model on all patients (last epoch), and
   quantizes it on a seeded sample of all the patches. Its decision threshold maximises
   ``--threshold-metric`` (default: the mean of F1 and balanced accuracy, the two figures the
   published anchors report) over the pooled out-of-fold predictions of step 3 (never a
   validation split, never the training patients); the rescoring of step 3 chooses each fold's
   threshold by the same metric on that fold's validation patients. It is a shipping choice, not
   a training one: the weights do not depend on it, so the recipe's own ``threshold_metric``
   (what a training run's validation threshold maximises) is left as it is.
5. Calibrates on the pooled out-of-fold predictions (a temperature, or Platt's temperature and
   shift, whichever lowers the cross-fitted ECE; the threshold moves with it, so no decision
   changes), scores tissue-free frames (blank glass, white, black, random near-uniform frames)
   as served and writes ``src/breastpath/assets/efficientnet_idc.*`` with ``MODEL_CARD.md``.

Every step reuses what a previous run of the same settings finished (cross-validation folds,
see ``breastpath crossval --resume``; final runs whose recorded training choices match), so an
interrupted build continues. ``--teacher-cv`` and ``--cv`` name existing cross-validation
folders instead of ``WORK/cv-<teacher>`` and ``WORK/cv``. Same data, configs and seeds give the
same model on CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.checkpoint import (
    BUNDLED,
    BUNDLED_CARDS,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from breastpath.choices import THRESHOLD_METRICS
from breastpath.config import DataConfig, TrainConfig, load_yaml
from breastpath.evaluate.calibration import (
    TEMPERATURE_RULE,
    best_out_of_fold_calibration,
    describe_calibration,
    with_temperature,
)
from breastpath.evaluate.metrics import (
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    describe_threshold_metric,
)
from breastpath.experiments.crossval import cross_validate
from breastpath.experiments.paired import read_oof
from breastpath.experiments.rescore import RESCORE_RUNTIMES, rescore_crossval
from breastpath.io import atomic_write_text, read_csv, write_json
from breastpath.train.loop import train

ASSETS = Path(__file__).resolve().parents[1] / "src" / "breastpath" / "assets"
ANCHORS = {
    "Cruz-Roa et al. 2014": (0.7180, 0.8423),
    "Janowczyk & Madabhushi 2016": (0.7648, 0.8468),
}
#: Microns per pixel of the IDC patches: 40x scans (about 0.25 µm/px) downsampled 16:1.
IDC_MPP = 4.0
CARD_METRICS = ("f1", "balanced_accuracy", "roc_auc", "accuracy", "sensitivity", "specificity")


MODEL_NAME = "efficientnet-idc"


def main() -> None:
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from breastpath.data.prepare import prepare

    work = Path(args.work)
    prepared = work / "prepared"
    if not (prepared / "meta.json").is_file():
        prepare([args.idc], prepared, config=DataConfig(seed=0, test_frac=0.0, val_frac=0.0))
    teachers = cross_validated_teachers(args, prepared)
    config = _config(args.config)
    recipe = config.with_options(teacher=[str(t["cv"]) for t in teachers]) if teachers else config
    cv_dir = Path(args.cv) if args.cv else work / "cv"
    cross_validate(prepared, cv_dir, recipe, folds=args.folds, seed=0, resume=True)
    rescored = work / f"cv-last-{args.runtime}"
    criterion = args.threshold_metric  # of each fold's threshold, and of the shipped one
    estimate = rescore_crossval(
        [cv_dir], rescored, checkpoint="last", runtime=args.runtime, threshold_metric=criterion
    )
    oof = read_oof(rescored / "oof_predictions.csv")
    threshold = float(choose_threshold(oof["label"], oof["raw"], criterion=criterion))
    if teachers:
        finals = [
            train_once(prepared, work / f"teacher-{t['name']}", t["config"]) for t in teachers
        ]
        recipe = config.with_options(teacher=[str(path / "best.json") for path in finals])
    final = load_checkpoint(train_once(prepared, work / "run", recipe) / "best.json")
    meta = final.meta.replace(
        name=MODEL_NAME,
        mpp=IDC_MPP,
        threshold=threshold,
        threshold_rule=f"maximises {describe_threshold_metric(criterion)} of the pooled "
        f"out-of-fold predictions of patient-level {args.folds}-fold cross-validation (last "
        f"epoch of each fold, runtime {args.runtime})",
        data={**final.meta.data, "prepared": "idc-all-patients"},
        init=_portable(final.meta.init),
        metrics={
            "crossval": crossval_summary(estimate),
            "teachers_crossval": {t["name"]: crossval_summary(t["estimate"]) for t in teachers},
            # the shipped rule (one threshold) on the same OOF predictions it was chosen on:
            # optimistic, for comparison with the per-fold-threshold estimate only
            "oof_at_threshold": oof_at(oof, threshold),
        },
    )
    # a temperature, or Platt's temperature and shift: whichever lowers the cross-fitted ECE
    (temperature, shift), report = best_out_of_fold_calibration(
        oof["probs"], oof["label"], oof["fold"]
    )
    if report["helps"]:
        meta = with_temperature(meta, temperature, shift=shift, rule=TEMPERATURE_RULE)
    meta = with_verdict_rule(meta, rescored / "oof_predictions.csv")
    assets = Path(args.assets)
    shipped = ship(final, meta, assets / BUNDLED["default"], prepared, runtime=args.runtime)
    meta = shipped.meta.replace(
        metrics={**meta.metrics, "background": background_scores(shipped), "calibration": report}
    )
    write_json(shipped.path, meta.to_dict())
    summary = json.loads((prepared / "summary.json").read_text(encoding="utf-8"))
    card = model_card(meta, summary, estimate, recipe, n_params=_n_params(final))
    atomic_write_text(assets / BUNDLED_CARDS["default"], card)
    print(json.dumps({"threshold": threshold, **meta.metrics}, indent=2))


def _portable(init: dict[str, Any]) -> dict[str, Any]:
    """The weights' provenance with the file's name only: no machine paths in the repository."""
    return {**init, "file": Path(init["file"]).name} if "file" in init else dict(init)


def cross_validated_teachers(args: argparse.Namespace, prepared: Path) -> list[dict[str, Any]]:
    """Each ``--teacher-config``'s name, config, cross-validation folder and estimate."""
    names = [_teacher_name(path) for path in args.teacher_config]
    cvs = args.teacher_cv or [Path(args.work) / f"cv-{name}" for name in names]
    if len(cvs) != len(names):
        raise SystemExit("give one --teacher-cv per --teacher-config")
    teachers = []
    for name, path, cv in zip(names, args.teacher_config, cvs, strict=True):
        config = _config(path)
        estimate = cross_validate(prepared, cv, config, folds=args.folds, seed=0, resume=True)
        teachers.append({"name": name, "config": config, "cv": Path(cv), "estimate": estimate})
    return teachers


def ship(final: Any, meta: Any, stem: Path, prepared: Path, *, runtime: str) -> Any:
    """Save the final weights with ``meta`` at ``stem`` (and, for ``int8``, the network
    quantized on a seeded sample of all the training patches); the loaded shipped checkpoint."""
    import dataclasses

    from breastpath.data.cache import open_prepared
    from breastpath.inference.quantize import CALIBRATION_SAMPLES, calibration_rows, quantized_copy

    stem.parent.mkdir(parents=True, exist_ok=True)
    if runtime == "int8":
        data = open_prepared(prepared)
        rows = data.indices("train")
        images = np.asarray(data.images[calibration_rows(rows, samples=CALIBRATION_SAMPLES)])
        source = f"all {len(rows):,} training patches ({data.meta.get('dataset', 'idc')})"
        quantized_copy(dataclasses.replace(final, meta=meta), stem, images=images, source=source)
    else:
        save_checkpoint(stem, tensors=final.model_state_prefixed(), meta=meta)
    return load_checkpoint(stem.with_suffix(".json"))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idc", required=True, help="IDC folder or zip")
    parser.add_argument("--work", default="build/default")
    parser.add_argument("--config", default="scripts/default_model.yaml", help="the served model")
    parser.add_argument(
        "--teacher-config", action="append", default=[], help="distil from these (repeatable)"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--teacher-cv", action="append", default=[], help="cross-validation of each teacher"
    )
    parser.add_argument("--cv", default=None, help="the served recipe's cross-validation folder")
    parser.add_argument("--runtime", choices=RESCORE_RUNTIMES, default="int8")
    parser.add_argument(
        "--threshold-metric",
        choices=THRESHOLD_METRICS,
        default="f1_balanced_accuracy",
        help="what each fold's threshold (on its validation patients) and the shipped one (on "
        "the pooled out-of-fold predictions) maximise",
    )
    parser.add_argument("--assets", default=str(ASSETS), help="where the model and card go")
    return parser.parse_args()


def _teacher_name(path: str | Path) -> str:
    """``scripts/teacher_lite0.yaml`` -> ``lite0``."""
    return Path(path).stem.removeprefix("teacher_")


def _config(path: str | Path) -> TrainConfig:
    options = load_yaml(path)
    return TrainConfig.from_dict({**options.get("train", options), "progress": False})


def train_once(prepared: Path, run: Path, config: TrainConfig) -> Path:
    """Train ``config`` on every patient of ``prepared`` into ``run`` (the last epoch is
    ``best``: there is no validation split), unless ``run`` already holds a finished run of the
    same training choices."""
    done = run / "best.json"
    if done.is_file() and run.joinpath("history.csv").is_file():
        recorded = TrainConfig.from_dict(load_checkpoint(done).meta.train).training_dict()
        epochs = len(read_csv(run / "history.csv"))
        if recorded == config.training_dict() and epochs == config.stop.epochs:
            logging.info("%s: reusing the finished run", run)
            return run
    train(prepared, run, config)
    return run


def crossval_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The pooled out-of-fold figures (with 95% intervals) that go into the checkpoint."""
    pooled = result["pooled"]
    keep = (*CARD_METRICS, "n", "n_positive", "n_negative", "ci95")
    return {
        "protocol": f"patient-level {result['folds']}-fold cross-validation, seed "
        f"{result['seed']}, thresholds chosen on each fold's validation patients (maximising "
        f"{describe_threshold_metric(_fold_metric(result))}), checkpoint "
        f"{result.get('checkpoint', 'best')}",
        "image": {k: pooled["image"][k] for k in keep if k in pooled["image"]},
        "patient": {k: pooled["patient"][k] for k in keep if k in pooled["patient"]},
    }


def _fold_metric(result: dict[str, Any]) -> str:
    """What the folds' thresholds maximised: as recorded by the cross-validation or its
    rescoring, else (files written before they recorded it) the recipe's own metric."""
    if "threshold_metric" in result:
        return str(result["threshold_metric"])
    return TrainConfig.from_dict(result["train"]).stop.threshold_metric


def oof_at(oof: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    """Pooled out-of-fold patch metrics at one global threshold, with patient-bootstrap CIs."""
    y, p, groups = oof["label"], oof["raw"], oof["patient"]
    metrics = binary_metrics(y, p, threshold=threshold)
    metrics["ci95"] = {
        m: bootstrap_ci(y, p, metric=m, threshold=threshold, groups=groups, n_boot=1000, seed=0)
        for m in CARD_METRICS
    }
    return metrics


def background_scores(
    checkpoint: Any, *, threshold: float | None = None, runtime: str | None = None
) -> dict[str, float]:
    """IDC probability of frames without tissue, scored as served (the ``Predictor`` of the
    checkpoint: its runtime, calibration and threshold, unless ``runtime`` or ``threshold``
    say otherwise): blank glass, white, black, and the share of 400 random near-uniform frames
    (:func:`breastpath.data.augment.background_frames`, a seed training never uses) at or
    above the threshold."""
    import torch

    from breastpath.data.augment import GLASS_RGB, background_frames
    from breastpath.inference.predictor import Predictor

    meta = checkpoint.meta
    predictor = Predictor(checkpoint, device="cpu", runtime=runtime)
    h, w = meta.input_size
    fixed = {"glass": GLASS_RGB, "white": (255, 255, 255), "black": (0, 0, 0)}
    batch = torch.stack(
        [torch.tensor(rgb, dtype=torch.uint8).expand(h, w, 3) for rgb in fixed.values()]
    )
    frames = background_frames(400, size=(h, w), generator=torch.Generator().manual_seed(123))
    probs = predictor.predict_proba(torch.cat([batch, frames]).numpy())[:, 1]
    out = {name: round(float(probs[i]), 4) for i, name in enumerate(fixed)}
    above = (probs[3:] >= (meta.threshold if threshold is None else threshold)).mean()
    out["random_frames_above_threshold"] = round(float(above), 4)
    return out


def _row(name: str, block: dict[str, Any]) -> str:
    cells = []
    for metric in CARD_METRICS:
        value = block.get(metric)
        low, high = block.get("ci95", {}).get(metric, (None, None))
        text = "n/a" if value is None else f"{value:.3f}"
        cells.append(text if low is None else f"{text} [{low:.3f}–{high:.3f}]")
    return f"| {name} | " + " | ".join(cells) + " |"


def _calibration_lines(meta: Any, calibration: dict[str, Any]) -> list[str]:
    return ["## Calibration", describe_calibration(calibration), ""]


def _n_params(checkpoint: Any) -> int:
    return sum(p.numel() for p in build_model(checkpoint).parameters())


def _model_lines(meta: Any, recipe: dict[str, Any], *, n_params: int) -> list[str]:
    """What the network is, how it is served, and its teachers (if distilled)."""
    working = meta.working_size or meta.input_size
    upsampled = f" (upsampled to {working[0]}x{working[1]} inside the network)"
    source = meta.init.get("source")
    start = f"offline weights: {source}" if source else "random weights"
    lines = [
        f"`{meta.model.name}`, {n_params:,} parameters, input 50x50"
        + (upsampled if tuple(working) != tuple(meta.input_size) else "")
        + f", from {start}; per-channel mean {list(meta.mean)} and std {list(meta.std)}.",
    ]
    if meta.runtime == "int8":
        calibration = meta.extra.get("int8_calibration", {})
        lines += [
            "Served by the `int8` runtime: the network quantized after training (onnxruntime,",
            f"static; {calibration.get('format', 'int8')}), activation ranges from",
            f"{calibration.get('samples', '?')} of {calibration.get('source', '?')}.",
            "The estimate below is of fold models quantized the same way (each on its own",
            "training patients). `--runtime torch` runs the float network; Grad-CAM always does.",
            "On an x86 CPU without 8-bit dot products (AVX512-VNNI / AVX-VNNI) onnxruntime's int8",
            "kernels saturate, so there the float network serves instead (as fast on such a CPU;",
            "the API's `runtime_note` says so).",
        ]
    teachers = meta.metrics.get("teachers_crossval") or {}
    if teachers:
        names = ", ".join(f"`{name}`" for name in teachers)
        distill = recipe["distill"]
        lines += [
            f"It is a *student*: trained on the labels and, with weight {distill['weight']:g} at",
            f"temperature {distill['temperature']:g}, on the softened probabilities of an",
            f"ensemble of teachers ({names}), each trained on the same patients.",
            "",
            "| teacher (patient-level CV, each fold's threshold) | "
            + " | ".join(CARD_METRICS)
            + " |",
            "|" + " --- |" * (len(CARD_METRICS) + 1),
            *[_row(f"{name}, patch", block["image"]) for name, block in teachers.items()],
        ]
    return lines


def model_card(
    meta: Any,
    summary: dict[str, Any],
    estimate: dict[str, Any],
    config: TrainConfig,
    *,
    n_params: int,
) -> str:
    """``MODEL_CARD.md`` from the final checkpoint's metadata and the cross-validation."""
    pooled = estimate["pooled"]
    background = meta.metrics["background"]
    calibration = meta.metrics["calibration"]
    recipe = config.training_dict()
    lines = [
        f"# Model card: {meta.name} (the bundled `default` model)",
        "",
        "**Research use only. Not a diagnostic device; not validated for clinical use.**",
        "",
        "## What it does",
        "Scores a 50x50 RGB patch of H&E-stained breast tissue (scanned at 40x, downsampled as in",
        "the Kaggle IDC set) with the probability of invasive ductal carcinoma (IDC).",
        f"Scale: about {meta.mpp:g} µm per pixel (40x scans, about 0.25 µm/px, downsampled 16:1",
        f"to 2.5x); the checkpoint records it as `mpp: {meta.mpp:g}` and `breastpath slide` reads",
        "tiles at that scale.",
        f"Decision threshold {meta.threshold:.4f}: {meta.threshold_rule}.",
        "",
        "## Model",
        *_model_lines(meta, recipe, n_params=n_params),
        "",
        "## Data",
        "A 4% per-patient sample of the Kaggle *Breast Histopathology Images* set (Janowczyk &",
        f"Madabhushi 2016; CC0): {summary['images']:,} patches from {summary['patients']}",
        f"patients ({summary['splits']['train']['classes']['non-IDC']:,} non-IDC, "
        f"{summary['splits']['train']['classes']['IDC']:,} IDC). The shipped model is trained",
        "on **all** of them (last epoch kept); its accuracy is estimated by cross-validation.",
        f"{summary['padded']} edge patches smaller than 50x50 were padded with white (61 of the",
        "62 are non-IDC: a white band is a weak non-IDC cue in this data)."
        + (
            " White bands are added to patches of both classes in training."
            if recipe["augment"]["background_frac"] > 0
            else ""
        ),
        "",
        "## Training",
        f"`{json.dumps(recipe)}`",
        "",
        "## Expected accuracy on new patients (patient-level cross-validation)",
        f"{estimate['folds']}-fold patient-level cross-validation over all {summary['patients']}"
        " patients (folds stratified by patient class, seed 0). In each fold 20% of the",
        "training patients validate; the threshold is chosen on them (maximising "
        f"{describe_threshold_metric(_fold_metric(estimate))}), and the fold's patients",
        "are scored once by a model that never saw them, at the last epoch (as the shipped",
        "model). Pooled out-of-fold figures; 95% intervals: bootstrap over patients (1,000).",
        "",
        "| level | " + " | ".join(CARD_METRICS) + " |",
        "|" + " --- |" * (len(CARD_METRICS) + 1),
        _row(f"patch (n={pooled['image']['n']:,})", pooled["image"]),
        _row(f"patient (n={pooled['patient']['n']}, mean score)", pooled["patient"]),
        "",
        "Patient level: a patient is positive when any of its patches is IDC; "
        f"{pooled['patient'].get('n_negative', 'few')} of {pooled['patient']['n']} patients "
        "have none, so patient specificity rests on few patients. Read the patch level as the",
        "headline. Published patient-disjoint anchors on the full set (F1 / balanced accuracy): "
        + "; ".join(f"{k} {f:.4f} / {b:.4f}" for k, (f, b) in ANCHORS.items())
        + ", trained on about 25x more patches.",
        "",
        *verdict_lines(meta),
        *_calibration_lines(meta, calibration),
        "## Tissue-free input",
        f"IDC probability of a blank-glass frame (RGB 241, 235, 238): {background['glass']:.3f};"
        f" white: {background['white']:.3f}; black: {background['black']:.3f}; share of 400",
        "random near-uniform frames at or above the threshold: "
        f"{background['random_frames_above_threshold']:.3f}. Entry points still reject what is",
        "not tissue before scoring (the quality gate); these figures say what the network itself",
        "does with such frames.",
        "",
        "## Limits",
        "- Trained on one public dataset from one institution's scanner and staining; expect lower",
        "  accuracy on other sites until stain normalization and site validation are done.",
        "- Patch-level model: it does not see tissue context beyond 50x50 pixels.",
        "- Only IDC vs non-IDC; other lesions are out of scope.",
        "- 185 patients, 7,488 patches: the intervals above are wide; recalibrate the threshold",
        "  for a new population.",
        "",
    ]
    return "\n".join(lines)


def with_verdict_rule(meta: Any, oof_csv: Path) -> Any:
    """``meta`` with the verdict rule's numbers chosen by cross-fitting on the as-served OOF
    predictions (:func:`breastpath.experiments.verdict_cv.cross_fit_rule`), the tile
    threshold carried onto the checkpoint's calibrated scale, and the figures in
    ``metrics.verdict_crossval``."""
    from breastpath.experiments.verdict_cv import cross_fit_oof, shipped_verdict
    from breastpath.inference.verdict import rule_for
    from breastpath.io import read_csv

    base = rule_for({"dataset": "idc", "threshold": 0.5}, unit="patch")
    chosen = cross_fit_oof(read_csv(oof_csv), base=base)
    verdict, figures = shipped_verdict(
        chosen, temperature=meta.temperature, logit_bias=meta.logit_bias
    )
    return meta.replace(verdict=verdict, metrics={**meta.metrics, "verdict_crossval": figures})


def verdict_lines(meta: Any) -> list[str]:
    """The card's section on the patient/slide verdict: the rule with the checkpoint's numbers
    and its cross-fitted presence and extent (``metrics.verdict_crossval``, written by
    ``scripts/set_verdict_rule.py``); nothing when the checkpoint has none."""
    from breastpath.inference.verdict import rule_for

    figures = meta.metrics.get("verdict_crossval")
    if not meta.verdict or not figures:
        return []
    rule = rule_for({"dataset": "idc", "threshold": meta.threshold, "verdict": meta.verdict})
    pooled, ci = figures["pooled"], figures["pooled"].get("ci95", {})
    tumour_free = pooled["presence"].get("specificity_tumour_free_tissue")
    free = "n/a" if tumour_free is None else f"{tumour_free:.3f} ({pooled['tumour_free_sets']})"

    def cell(block: str, key: str) -> str:
        value = pooled[block][key]
        if value is None:
            return "n/a"
        low, high = ci.get(key, (None, None))
        return f"{value:.3f}" + ("" if low is None else f" [{low:.3f}–{high:.3f}]")

    return [
        "## Patients and slides: the verdict rule",
        "Every entry point (predict, the API and page, mosaic, evaluate, slide, cohorts) turns",
        "a patient's patches or a slide's tiles into one verdict with one rule:",
        f"**{rule.describe()}** (the tile threshold on this checkpoint's calibrated scale).",
        "The **extent** is the share of the assessed tiles called IDC. The rule's numbers were",
        "chosen by cross-fitting on the out-of-fold predictions of the patient-level",
        "cross-validation: each fold's numbers were",
        "chosen on the other folds' patients only (tile threshold: least extent error; counts:",
        "best presence balanced accuracy).",
        "",
        "| patients | presence sensitivity | presence specificity | specificity, tumour-free "
        "tissue | extent MAE | extent Pearson r | extent ICC |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {pooled['patients']} ({pooled['positive_patients']} with IDC, "
        f"{pooled['negative_patients']} without) | {cell('presence', 'sensitivity')} | "
        f"{cell('presence', 'specificity')} | {free} | {cell('extent', 'mae')} | "
        f"{cell('extent', 'pearson_r')} | {cell('extent', 'icc')} |",
        "",
        f"Only {pooled['negative_patients']} patients have no IDC patch in this sample, so",
        "specificity is also measured on every patient's own tumour-free patches (sets of at",
        "least 10). True extent = the share of a patient's sampled patches labelled IDC. Goal",
        "not reached: extent MAE 0.08 and r 0.80 (docs/results.md).",
        "",
    ]


if __name__ == "__main__":
    main()
