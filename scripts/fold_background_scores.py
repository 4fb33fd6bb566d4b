"""Tissue-free frames scored by each fold network of a cross-validation, against that fold's
own threshold (docs/results.md, issue 16's fifth round).

Each fold's last-epoch float network scores the frames the build script scores for the shipped
model (``build_default_model.background_scores``: blank glass, white and black, exactly uniform,
and 400 random near-uniform frames). The thresholds are those of a rescoring
(``scripts/rescore_crossval.py``), which chose them on each fold's validation patients:

    python scripts/fold_background_scores.py runs/cv-lite0-80-dropbg12 \\
        runs/cv-lite0-80-dropbg12-last-int8-f1_balanced_accuracy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from build_default_model import background_scores

from breastpath.checkpoint import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv", type=Path, help="finished crossval folder (fold0/run/last.json ...)")
    parser.add_argument("rescored", type=Path, help="its rescoring (crossval.json per_fold)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    per_fold = json.loads((args.rescored / "crossval.json").read_text(encoding="utf-8"))
    for fold in per_fold["per_fold"]:
        checkpoint = load_checkpoint(args.cv / f"fold{fold['fold']}" / "run" / "last.json")
        threshold = float(fold["threshold"])  # on the network's own softmax (no calibration)
        scores = background_scores(checkpoint, threshold=threshold, runtime="torch")
        print(json.dumps({"fold": fold["fold"], "threshold": round(threshold, 4), **scores}))


if __name__ == "__main__":
    main()
