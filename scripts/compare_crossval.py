"""Paired difference of two cross-validations over the same patients (B minus A), with
patient-bootstrap 95% intervals (:mod:`breastpath.experiments.paired`).

    python scripts/compare_crossval.py runs/cv-baseline runs/cv-background
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from breastpath.experiments.paired import paired_delta, read_oof


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="crossval folder A (the reference)")
    parser.add_argument("b", help="crossval folder B")
    parser.add_argument("--positive", default="IDC", help="name of the positive class")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="one fixed decision threshold for both (default: each image's fold threshold)",
    )
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    a = read_oof(
        Path(args.a) / "oof_predictions.csv", positive=args.positive, threshold=args.threshold
    )
    b = read_oof(
        Path(args.b) / "oof_predictions.csv", positive=args.positive, threshold=args.threshold
    )
    result = paired_delta(a, b, n_boot=args.n_boot)
    for metric, r in result.items():
        low, high = r["ci95"]
        print(
            f"{metric}: A {r['a']:.4f}, B {r['b']:.4f}, "
            f"B - A {r['delta']:+.4f} [{low:+.4f}, {high:+.4f}]"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
