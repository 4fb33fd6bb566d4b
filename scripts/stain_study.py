"""Does stain normalization or stain augmentation help CancerNet on IDC? Same split, same seed.

Prepares the IDC source once per normalization (none, macenko, vahadane; every target
fitted on training images only), trains the same recipe on each and on the raw cache with stain
augmentation (Tellez/Macenko, HED jitter), evaluates each best checkpoint on the test split and
writes ``study.json`` and ``study.md`` into ``--out``.

    python scripts/stain_study.py --idc ../shared/data/idc --out stain-study --epochs 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from breastpath.config import DataConfig, TrainConfig
from breastpath.data.prepare import prepare
from breastpath.evaluate.metrics import bootstrap_ci
from breastpath.evaluate.pipeline import evaluate_checkpoint
from breastpath.io import atomic_write_text, markdown_table, read_csv, write_json
from breastpath.train.loop import train

#: (name, cache normalization, training stain augmentation)
VARIANTS = (
    ("none", "none", "none"),
    ("macenko", "macenko", "none"),
    ("vahadane", "vahadane", "none"),
    ("augment-tellez-macenko", "none", "macenko"),
    ("augment-hed", "none", "hed"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idc", required=True, help="IDC folder or zip")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [v for v in VARIANTS if not args.only or v[0] in args.only.split(",")]
    results_file = out / "study.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name, stain, augment in chosen:
        if name in results:
            continue
        cache = out / f"prepared-{stain}"
        started = time.perf_counter()
        if not (cache / "meta.json").is_file():
            prepare([args.idc], cache, config=DataConfig(seed=args.seed, stain=stain))
        prepare_s = time.perf_counter() - started
        config = TrainConfig.from_flat(
            optimizer="adagrad",
            lr=0.01,
            batch_size=64,
            epochs=args.epochs,
            patience=args.epochs,
            monitor="val_auc",
            seed=args.seed,
            stain_augment=augment,
            progress=False,
            num_threads=args.threads,
        )
        started = time.perf_counter()
        summary = train(cache, out / f"run-{name}", config)
        train_s = time.perf_counter() - started
        metrics = evaluate_checkpoint(out / f"run-{name}", cache, out / f"eval-{name}")
        patch = metrics["patch"]
        rows = read_csv(out / f"eval-{name}" / "predictions.csv")
        y = np.array([int(r["label"]) for r in rows])
        p = np.array([float(r["probability"]) for r in rows])
        groups = np.array([r["patient"] for r in rows])
        ci = bootstrap_ci(y, p, metric="roc_auc", threshold=0.5, groups=groups, seed=0)
        results[name] = {
            "stain": stain,
            "stain_augment": augment,
            "best_epoch": summary["best_epoch"],
            "val_auc": summary["val"].get("roc_auc"),
            "test_balanced_accuracy": patch["balanced_accuracy"],
            "test_f1": patch["f1"],
            "test_roc_auc": patch["roc_auc"],
            "test_roc_auc_ci": list(ci),
            "prepare_s": round(prepare_s, 1),
            "train_s": round(train_s, 1),
        }
        write_json(results_file, results)
        print(name, json.dumps(results[name]), flush=True)
    if "none" in results:
        for name in results:
            if name != "none":
                results[name]["auc_minus_none_ci"] = paired_auc_difference(
                    out / f"eval-{name}", out / "eval-none"
                )
        write_json(results_file, results)
    atomic_write_text(out / "study.md", to_markdown(results, epochs=args.epochs))


def paired_auc_difference(a: Path, b: Path, *, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% patient-cluster bootstrap interval of ROC-AUC(a) - ROC-AUC(b) on the same rows."""
    from sklearn.metrics import roc_auc_score

    rows_a = {r["row"]: r for r in read_csv(a / "predictions.csv")}
    rows_b = {r["row"]: r for r in read_csv(b / "predictions.csv")}
    keys = sorted(rows_a, key=int)
    y = np.array([int(rows_a[k]["label"]) for k in keys])
    pa = np.array([float(rows_a[k]["probability"]) for k in keys])
    pb = np.array([float(rows_b[k]["probability"]) for k in keys])
    patients = np.array([rows_a[k]["patient"] for k in keys])
    unique = np.unique(patients)
    members = [np.flatnonzero(patients == u) for u in unique]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        pick = np.concatenate([members[i] for i in rng.integers(0, len(unique), len(unique))])
        if len(np.unique(y[pick])) < 2:
            continue
        diffs.append(roc_auc_score(y[pick], pa[pick]) - roc_auc_score(y[pick], pb[pick]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return [round(float(low), 4), round(float(high), 4)]


def to_markdown(results: dict, *, epochs: int) -> str:
    header = [
        "variant",
        "cache stain",
        "stain augment",
        "best epoch",
        "val AUC",
        "test BAC",
        "test F1",
        "test ROC-AUC (95% CI)",
        "AUC minus none (95% CI)",
        "train s",
    ]
    rows = []
    for name, r in results.items():
        ci = r.get("test_roc_auc_ci")
        ci_text = f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
        diff = r.get("auc_minus_none_ci")
        diff_text = f"{diff[0]:+.3f} to {diff[1]:+.3f}" if diff else "-"
        rows.append(
            [
                name,
                r["stain"],
                r["stain_augment"],
                r["best_epoch"],
                f"{r['val_auc']:.4f}",
                f"{r['test_balanced_accuracy']:.4f}",
                f"{r['test_f1']:.4f}",
                f"{r['test_roc_auc']:.4f}{ci_text}",
                diff_text,
                f"{r['train_s']:.0f}",
            ]
        )
    intro = (
        f"CancerNet, Adagrad 0.01, batch 64, {epochs} epochs, best epoch by validation ROC-AUC; "
        "IDC test split (38 patients, 1,499 patches)."
    )
    return f"{intro}\n\n{markdown_table(header, rows)}\n"


if __name__ == "__main__":
    main()
