"""Leave-one-subtype-out with the bundled recipe fine-tuned: which BreakHis subtypes fail unseen.

For each subtype of a prepared BreakHis folder (binary task), train the recipe of ``--config``
on the patients of every other subtype (20% of them, by patient, validate: early stopping, as in
the cross-validation) and score the held-out subtype's images at a fixed threshold: the share
given the right benign/malignant label, and each held-out patient's mean score. A subtype whose
removal leaves one class only is skipped. This is what ``scripts/breakhis_generalisation.py``
measures on frozen features, with the model we ship instead.

Usage::

    python scripts/breakhis_loso_finetune.py build/breakhis/prepared \\
        --config scripts/breakhis_model.yaml --out runs/bh-loso

Finished subtypes are reused (``OUT/<subtype>/result.json``). Writes ``OUT/loso.json`` and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from breastpath.config import TrainConfig, load_yaml
from breastpath.data.cache import PreparedData, open_prepared
from breastpath.experiments.crossval import fold_splits
from breastpath.io import read_json, write_json


def subtype_splits(data: PreparedData, subtype: str, *, val_frac: float, seed: int) -> dict:
    """``patient -> split``: the subtype's patients test; the others train and validation."""
    subtypes = np.array([row["subtype"] for row in data.rows])
    held = {str(p) for p in data.patients[subtypes == subtype]}
    others = {str(p) for p in data.patients[subtypes != subtype]}
    if held & others:
        raise SystemExit(f"patients {sorted(held & others)} have {subtype} and another subtype")
    fold_of = {p: 0 for p in held} | {p: 1 for p in others}  # fold 0: the held-out subtype
    return fold_splits(data, fold_of, 0, val_frac=val_frac, seed=seed)


def run_subtype(
    data: PreparedData, subtype: str, out: Path, config: TrainConfig, *, threshold: float
) -> dict[str, Any]:
    """Train without ``subtype`` and score its images; the result is cached in ``out``."""
    from breastpath.checkpoint import load_checkpoint
    from breastpath.data.views import write_split_view
    from breastpath.inference.batches import checkpoint_rows
    from breastpath.train.loop import train

    done = out / "result.json"
    if done.is_file():
        return read_json(done)
    splits = subtype_splits(data, subtype, val_frac=0.2, seed=config.seed)
    view = write_split_view(
        data, out / "data", splits, split_info={"method": "leave one subtype out", "held": subtype}
    )
    train(view, out / "run", config)
    rows = np.flatnonzero(np.array([splits[str(p)] == "test" for p in data.patients]))
    probs = checkpoint_rows(load_checkpoint(out / "run" / "best.json"), data.images, rows)
    score = probs[:, -1]
    truth = data.labels[rows] == len(data.class_names) - 1
    patients = data.patients[rows]
    result = {
        "subtype": subtype,
        "class": data.class_names[int(data.labels[rows][0])],
        "images": len(rows),
        "patients": {
            str(p): round(float(score[patients == p].mean()), 4) for p in sorted(set(patients))
        },
        "threshold": threshold,
        "accuracy": float(np.mean((score >= threshold) == truth)),
        "mean_score": float(score.mean()),
    }
    write_json(done, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", help="a prepared BreakHis folder (binary task)")
    parser.add_argument("--config", default="scripts/breakhis_model.yaml")
    parser.add_argument("--out", default="runs/bh-loso")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    data = open_prepared(args.prepared)
    config = TrainConfig.from_dict({**load_yaml(args.config), "progress": False})
    out = Path(args.out)
    subtypes = sorted({row["subtype"] for row in data.rows})
    results = []
    for subtype in subtypes:
        rest = {
            int(lab)
            for row, lab in zip(data.rows, data.labels, strict=True)
            if row["subtype"] != subtype
        }
        if len(rest) < 2:
            continue  # the other subtypes hold one class only
        results.append(run_subtype(data, subtype, out / subtype, config, threshold=args.threshold))
    write_json(out / "loso.json", {"config": args.config, "results": results})
    print("| held-out subtype | class | images | right at threshold | mean score | patients |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        patients = ", ".join(f"{p} {s:.2f}" for p, s in r["patients"].items())
        print(
            f"| {r['subtype']} | {r['class']} | {r['images']} | {r['accuracy']:.2f} "
            f"| {r['mean_score']:.2f} | {patients} |"
        )
    print(json.dumps({r["subtype"]: round(r["accuracy"], 3) for r in results}))


if __name__ == "__main__":
    main()
