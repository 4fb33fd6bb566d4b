"""Choose a verdict rule's numbers by cross-fitting on a finished crossval's OOF predictions.

    python scripts/verdict_crossval.py runs/cv-idc --dataset idc --out runs/cv-idc/verdict.json

Reads ``oof_predictions.csv`` (one row per out-of-fold patch: patient, label, fold, class
probabilities), chooses the rule's tile threshold, ``min_tiles`` and ``min_extent`` for each
fold on the other folds' patients (:func:`breastpath.experiments.verdict_cv.cross_fit_rule`)
and prints the pooled presence and extent figures with patient-bootstrap intervals, beside the
same predictions judged by the base rule at each fold's own patch threshold.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from breastpath.experiments.crossval_metrics import verdict_markdown
from breastpath.experiments.verdict_cv import cross_fit_oof
from breastpath.inference.verdict import rule_for
from breastpath.io import read_csv, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dir", type=Path, help="a finished breastpath crossval folder")
    parser.add_argument("--dataset", default="idc", help="whose verdict rule (idc, breakhis)")
    parser.add_argument("--positive", default=None, help="probability column [default: last]")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    rows = read_csv(args.cv_dir / "oof_predictions.csv")
    base = rule_for({"dataset": args.dataset, "threshold": 0.5}, unit="patch")
    column = args.positive or [k for k in rows[0] if k.startswith("p_")][-1]
    result = cross_fit_oof(rows, base=base, column=column, n_boot=args.n_boot)
    patients = np.array([r["patient"] for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    probs = np.array([float(r[column]) for r in rows])
    folds = np.array([int(r["fold"]) for r in rows])
    # the base rule at each fold's own patch threshold (the model's), for comparison
    at_model = []
    for fold in np.unique(folds):
        inside = folds == fold
        threshold = float(rows[int(np.flatnonzero(inside)[0])]["threshold"])
        rule = base.with_threshold(threshold)
        for patient, verdict in rule.apply_groups(patients[inside], probs[inside]).items():
            true = labels[patients == patient].mean()
            at_model.append((true, float(verdict.extent or 0.0), bool(verdict.positive)))
    true, extent, _ = (np.array(v) for v in zip(*at_model, strict=True))
    result["at_model_threshold"] = {
        "mae": round(float(np.abs(extent - true).mean()), 3),
        "bias": round(float((extent - true).mean()), 3),
        "pearson_r": round(float(np.corrcoef(true, extent)[0, 1]), 3),
    }
    print("\n".join(verdict_markdown(result)))
    print("at each fold's patch threshold:", json.dumps(result["at_model_threshold"]))
    if args.out is not None:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
