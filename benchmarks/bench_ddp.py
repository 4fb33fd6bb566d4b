"""CPU training throughput: one process vs ``torchrun`` DDP (gloo) on a generated IDC-like set.

Writes a tree of synthetic H&E-like 50x50 patches, prepares it once, then trains CancerNet with
``breastpath train`` for a few epochs, ``--rounds`` times in turn: one process with all
``--threads``, one process with ``--threads / N``, and ``torchrun --nproc-per-node N`` with
``--threads / N`` each. It prints the training patches/s of the epochs after the first (from
``history.csv``, all processes' patches) and the wall time of each run (process start included).
The global batch is the same in all.

    python benchmarks/bench_ddp.py                      # 2 processes vs 1, 2 threads in all
    python benchmarks/bench_ddp.py --procs 4 --threads 8 --patients 80

DDP cannot beat one process on cores that one process already uses: the processes share them and
add all-reduces (gradients, and the batch-norm statistics of the global batch). Compare figures
taken in one run; on a shared machine, OpenMP threads of one process suffer most from other load.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_tree(root: Path, *, patients: int, per_class: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for p in range(patients):
        patient = str(20000 + p)
        for label in (0, 1):
            base = np.array([225, 160, 200]) if label == 0 else np.array([150, 90, 170])
            folder = root / patient / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = base + rng.normal(0, 18, size=(50, 50, 3))
                image[rng.random((50, 50)) < (0.05 if label == 0 else 0.25)] -= 60
                name = f"{patient}_idx5_x{50 * i + 1}_y{50 * label + 1}_class{label}.png"
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / name)


def train_once(data: Path, out: Path, *, procs: int, threads: int, args) -> tuple[list, float]:
    launcher = [sys.executable, "-m"]
    if procs > 1:
        launcher += ["torch.distributed.run", "--nproc-per-node", str(procs), "-m"]
    command = [
        *launcher,
        "breastpath",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--device",
        "cpu",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    with (out / "history.csv").open(newline="") as handle:
        rates = [float(row["patches_per_s"]) for row in csv.DictReader(handle)][1:]
    return rates, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="in all")
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if args.batch_size % args.procs:
        parser.error("--batch-size must be a multiple of --procs")

    from breastpath.config import DataConfig
    from breastpath.data.cache import open_prepared
    from breastpath.data.prepare import prepare

    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        root = Path(tmp)
        write_tree(root / "IDC", patients=args.patients, per_class=args.per_class)
        prepare([root / "IDC"], root / "prepared", config=DataConfig(val_frac=0.1, seed=0))
        train_rows = len(open_prepared(root / "prepared").indices("train"))
        share = max(1, args.threads // args.procs)
        setups = {  # label: (processes, threads each)
            f"1 x {args.threads} threads": (1, args.threads),
            f"1 x {share} threads": (1, share),
            f"{args.procs} x {share} threads": (args.procs, share),
        }
        results: dict[str, list] = {label: [] for label in setups}
        for r in range(args.rounds):
            for i, (label, (procs, threads)) in enumerate(setups.items()):
                rates, wall = train_once(
                    root / "prepared", root / f"run-{i}-{r}", procs=procs, threads=threads,
                    args=args,
                )  # fmt: skip
                results[label].append((rates, wall))
    print(
        f"{platform.machine()}, {os.cpu_count()} CPU cores; {train_rows} training patches; "
        f"global batch {args.batch_size}; {args.epochs} epochs; {args.threads} threads in all"
    )
    print(f"{'processes':<16} {'patches/s (median, epochs 2+)':>30} {'wall s (median)':>16}  runs")
    for label, runs in results.items():
        rates = [rate for run_rates, _ in runs for rate in run_rates]
        walls = [wall for _, wall in runs]
        each = ", ".join(f"{statistics.median(r):.0f}/s {w:.0f} s" for r, w in runs)
        print(
            f"{label:<16} {statistics.median(rates):>30.0f} {statistics.median(walls):>16.1f}  "
            f"{each}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
