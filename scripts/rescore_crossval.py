"""Score finished ``breastpath crossval`` folds again: TTA, last epoch, or an ensemble.

    python scripts/rescore_crossval.py runs/cv-a [runs/cv-b ...] --out runs/cv-a-flips \
        --tta flips --checkpoint last
    python scripts/rescore_crossval.py runs/cv-a --out runs/cv-a-int8 --runtime int8
    python scripts/rescore_crossval.py runs/cv-a --out runs/cv-a-f1 --threshold-metric f1

Thresholds are chosen again on each fold's validation patients; see
:mod:`breastpath.experiments.rescore`.
"""

from __future__ import annotations

import argparse

from breastpath.choices import THRESHOLD_METRICS, TTA_MODES
from breastpath.experiments.rescore import CHECKPOINTS, RESCORE_RUNTIMES, rescore_crossval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dirs", nargs="+", help="finished crossval folders (same folds)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    parser.add_argument("--tta", choices=TTA_MODES, default="none")
    parser.add_argument("--runtime", choices=RESCORE_RUNTIMES, default="torch")
    parser.add_argument(
        "--threshold-metric",
        choices=THRESHOLD_METRICS,
        default="balanced_accuracy",
        help="what each fold's threshold maximises on its validation patients",
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    result = rescore_crossval(
        args.cv_dirs,
        args.out,
        checkpoint=args.checkpoint,
        tta=args.tta,
        runtime=args.runtime,
        threshold_metric=args.threshold_metric,
    )
    for level in ("image", "patient"):
        block = result["pooled"][level]
        parts = []
        for metric in ("f1", "balanced_accuracy", "roc_auc"):
            low, high = block["ci95"][metric]
            parts.append(f"{metric} {block[metric]:.4f} [{low:.3f}, {high:.3f}]")
        print(f"{level} (n={block['n']}): " + ", ".join(parts))
    print(f"{result['seconds']:.0f} s; wrote {args.out}/crossval.md")


if __name__ == "__main__":
    main()
