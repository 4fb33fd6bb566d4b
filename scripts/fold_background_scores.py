"""Tissue-free frames scored by each fold network of a cross-validation, against that fold's
own threshold (docs/results.md, issue 16's fifth round).

Each fold's last-epoch float network scores blank glass, white and black frames (exactly
uniform) and 400 random near-uniform frames (:func:`breastpath.data.augment.background_frames`,
seed 123). The thresholds are those of a rescoring (``scripts/rescore_crossval.py``), which
chose them on each fold's validation patients:

    python scripts/fold_background_scores.py runs/cv-lite0-80-dropbg12 \\
        runs/cv-lite0-80-dropbg12-last-int8-f1_balanced_accuracy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from breastpath.checkpoint import load_checkpoint
from breastpath.data.augment import GLASS_RGB, background_frames
from breastpath.inference.predictor import Predictor

FIXED = {"glass": GLASS_RGB, "white": (255, 255, 255), "black": (0, 0, 0)}


def frames(size: tuple[int, int]) -> np.ndarray:
    """The three uniform frames, then 400 random ones: uint8 NHWC."""
    h, w = size
    fixed = [torch.tensor(rgb, dtype=torch.uint8).expand(h, w, 3) for rgb in FIXED.values()]
    random = background_frames(400, size=size, generator=torch.Generator().manual_seed(123))
    return torch.cat([torch.stack(fixed), random]).numpy()


def fold_scores(run: Path, threshold: float) -> dict[str, float]:
    """IDC probability of each uniform frame, and the share of random frames at or above
    ``threshold``, for the fold network ``run/last.json`` (its own softmax, float)."""
    checkpoint = load_checkpoint(run / "last.json")
    predictor = Predictor(checkpoint, device="cpu", runtime="torch")
    probs = predictor.predict_proba(frames(checkpoint.meta.input_size))[:, 1]
    out = {name: round(float(probs[i]), 3) for i, name in enumerate(FIXED)}
    out["random_frames_above_threshold"] = round(float((probs[3:] >= threshold).mean()), 3)
    return {"threshold": round(threshold, 3), **out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv", type=Path, help="finished crossval folder (fold0/run/last.json ...)")
    parser.add_argument("rescored", type=Path, help="its rescoring (crossval.json per_fold)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    per_fold = json.loads((args.rescored / "crossval.json").read_text(encoding="utf-8"))
    for fold in per_fold["per_fold"]:
        scores = fold_scores(args.cv / f"fold{fold['fold']}" / "run", float(fold["threshold"]))
        print(json.dumps({"fold": fold["fold"], **scores}))


if __name__ == "__main__":
    main()
