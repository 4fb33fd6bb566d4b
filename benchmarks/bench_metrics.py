"""Evaluation at full-IDC scale: threshold search and patient aggregation on 277,524 patches.

The Kaggle IDC set has 277,524 patches from 279 patients; every cross-validation fold and
every report chooses a threshold and aggregates patients over data of that size. This times
:func:`~breastpath.evaluate.metrics.choose_threshold` (sort once, cumulative sums) against
scikit-learn's ROC curve on the same scores, and
:func:`~breastpath.evaluate.aggregate.patient_scores` against a loop over the patients.

    python benchmarks/bench_metrics.py [--patches 277524] [--repeats 5]

Nothing here is a pass/fail test; compare figures taken in one run on one machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from breastpath.evaluate.aggregate import patient_scores
from breastpath.evaluate.metrics import choose_threshold


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _sklearn_youden(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, s)
    return float(thresholds[int(np.argmax(tpr - fpr))])


def _loop_means(patients: np.ndarray, s: np.ndarray) -> object:
    return {p: float(s[patients == p].mean()) for p in np.unique(patients)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=277_524)
    parser.add_argument("--patients", type=int, default=279)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, args.patches)
    s = np.clip(0.3 * y + rng.uniform(0, 0.7, args.patches), 0, 1)
    patients = rng.integers(0, args.patients, args.patches).astype(str)
    rows = [
        ("choose_threshold (balanced accuracy)", lambda: choose_threshold(y, s)),
        ("sklearn roc_curve + argmax (Youden)", lambda: _sklearn_youden(y, s)),
        ("patient_scores (mean)", lambda: patient_scores(patients, y, s)),
        ("a mask per patient (reference)", lambda: _loop_means(patients, s)),
    ]
    print(f"{args.patches:,} patches, {args.patients} patients, median of {args.repeats}")
    for name, fn in rows:
        seconds = _median_seconds(fn, args.repeats)
        print(f"| {name} | {seconds * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
