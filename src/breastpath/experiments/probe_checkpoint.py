"""The checkpoint and Markdown report of a probe (:mod:`breastpath.experiments.probe`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from breastpath.experiments.embed import Embeddings
    from breastpath.experiments.probe import ProbeOptions


def save_probe(
    stem: Path, emb: Embeddings, *, options: ProbeOptions, val_frac: float, cv: dict[str, Any]
) -> Path:
    """Refit the probe on all patients (one patient-level validation split for early stopping
    and the threshold) and save it as a ``probe`` checkpoint; return its JSON path."""
    import breastpath
    from breastpath.checkpoint import FORMAT, default_cancer_classes, parse_meta, save_checkpoint
    from breastpath.experiments.probe import fit_and_threshold
    from breastpath.models.registry import resolve_data_config

    x = np.asarray(emb.vectors, dtype=np.float32)
    cancer = default_cancer_classes(emb.class_names)
    fitted, threshold = fit_and_threshold(
        emb,
        x,
        np.ones(len(x), dtype=bool),
        val_frac=val_frac,
        seed=options.seed,
        options=options,
        cancer=cancer,
    )
    backbone = dict(emb.meta["backbone"])
    args = {**backbone, **fitted.args, "feature_dim": int(x.shape[1])}
    prep = emb.meta["preprocessing"]
    model_data = resolve_data_config("probe", args)
    raw = {
        "format": FORMAT,
        "name": f"{backbone['backbone']} + {options.head} probe",
        "model": {"name": "probe", "num_classes": len(emb.class_names), "args": args},
        "input_size": list(prep["cache_image_size"]),
        "mean": list(prep["mean"]),
        "std": list(prep["std"]),
        "class_names": emb.class_names,
        "cancer_classes": list(cancer),
        "threshold": threshold,
        "threshold_rule": "balanced accuracy on the validation patients' cancer score",
        "data": {
            "dataset": emb.meta.get("dataset"),
            "task": emb.meta.get("task"),
            "split": emb.meta.get("split"),
            "embeddings": emb.root.name,
        },
        "train": {"probe": options.head, **_options(options)},
        "init": {**emb.meta.get("init", {}), "backbone_sha256": backbone["backbone_sha256"]},
        "metrics": {"cv": _headline(cv), "head": fitted.report},
        "version": breastpath.__version__,
        **({"stain": emb.meta["stain"]} if emb.meta.get("stain") else {}),
        **({"data_config": model_data.to_dict()} if model_data is not None else {}),
    }
    meta = parse_meta(raw, source="new probe checkpoint")
    tensors = {f"model.head.{k}": v for k, v in fitted.module.state_dict().items()}
    return save_checkpoint(stem, tensors=tensors, meta=meta)


def _options(options: ProbeOptions) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()}


def _headline(cv: dict[str, Any]) -> dict[str, Any]:
    pooled = cv["pooled"]
    keep = ("n", "accuracy", "balanced_accuracy", "roc_auc", "f1", "ci95")
    return {level: {k: pooled[level].get(k) for k in keep} for level in ("image", "patient")}


def _cell(block: dict[str, Any], metric: str) -> str:
    value = block.get(metric)
    if value is None:
        return "n/a"
    low, high = (block.get("ci95") or {}).get(metric, (None, None))
    interval = f" ({low:.3f}–{high:.3f})" if low is not None and high is not None else ""
    return f"{value:.3f}{interval}"


def format_probe_markdown(result: dict[str, Any]) -> str:
    """A Markdown table of a probe's pooled out-of-fold metrics with 95% intervals."""
    backbone = result["backbone"]
    lines = [
        f"# {result['options']['head']} probe on {backbone['backbone']} embeddings",
        "",
        f"Embeddings: `{Path(result['embeddings']).name}`; weights sha256 "
        f"`{(backbone.get('backbone_sha256') or 'none')[:12]}`. Patient-level "
        f"{result['folds']}-fold CV; {result['val_frac']:.0%} of each fold's training patients "
        "validate (early stopping, threshold). 95% intervals: bootstrap over patients.",
        "",
        "| level | n | accuracy | balanced accuracy | ROC-AUC | F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for level in ("image", "patient"):
        block = result["pooled"][level]
        cells = [_cell(block, m) for m in ("accuracy", "balanced_accuracy", "roc_auc", "f1")]
        lines.append(f"| {level} | {block['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
