"""Scoring throughput of a checkpoint as served: ``Predictor.predict_proba`` on prepared patches.

Scores the same batches with each runtime (torch, onnx, and int8 when the checkpoint carries a
quantized network) and thread count, and prints wall-clock
patches/s and patches per CPU-second of this process (``est. N-core``: the CPU-time rate times
the thread count, which other load on a shared machine disturbs less than wall-clock time).
Patches are the real IDC sample when ``../shared/data/idc`` is there (prepared once into a
temporary cache), else synthetic 50x50 noise of the same shape.

    python benchmarks/bench_predictor.py                          # the bundled default
    python benchmarks/bench_predictor.py --checkpoint runs/x --threads 1 2 --patches 20000

Nothing here is a pass/fail test; compare figures taken in one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from breastpath.inference.predictor import Predictor

SHARED_IDC = Path(__file__).resolve().parents[2] / "shared" / "data" / "idc"


def cpu_description() -> str:
    """The CPU's model name, the vector unit torch uses, whether it has 8-bit dot products
    (AVX512-VNNI / AVX-VNNI: what makes the int8 runtime about twice as fast as float) and a
    float32 matrix-multiply rate on one thread, so figures from different machines can be
    compared."""
    from breastpath.inference.onnx import VNNI_FLAGS, cpu_flags

    model = "unknown model"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    vnni = sorted(cpu_flags() & VNNI_FLAGS) or ["no VNNI"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a = torch.randn(1024, 1024)
    a @ a  # warm-up
    start = time.perf_counter()
    for _ in range(8):
        a @ a
    gflops = 8 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9
    torch.set_num_threads(threads)
    capability = torch.backends.cpu.get_cpu_capability()
    rate = f"float32 matmul {gflops:.0f} GFLOP/s (1 thread)"
    return f"{model}; {capability}, {', '.join(vnni)}; {rate}"


def patches(count: int, size: tuple[int, int], *, seed: int = 0) -> tuple[np.ndarray, str]:
    """``count`` uint8 patches (the real IDC patches, repeated as needed), and their source."""
    if SHARED_IDC.is_dir() and size == (50, 50):
        import tempfile

        from breastpath.data.cache import open_prepared
        from breastpath.data.prepare import prepare

        with tempfile.TemporaryDirectory() as tmp:
            prepare([SHARED_IDC], Path(tmp) / "idc")
            images = np.array(open_prepared(Path(tmp) / "idc").images)
        reps = -(-count // len(images))
        return np.concatenate([images] * reps)[:count], f"IDC sample ({len(images)} patches)"
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, *size, 3), dtype=np.uint8), "synthetic noise"


def measure(predictor: Predictor, batch: np.ndarray, *, batch_size: int) -> dict[str, float]:
    predictor.predict_proba(batch[:batch_size])  # warm-up (ONNX session, allocator)
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(batch), batch_size):
        predictor.predict_proba(batch[start : start + batch_size])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_patches_per_s": len(batch) / wall, "patches_per_cpu_s": len(batch) / cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--patches", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--runtimes", nargs="+", default=None, help="default: torch, onnx and int8 if attached"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    probe = Predictor.from_checkpoint(args.checkpoint, device="cpu")
    runtimes = args.runtimes or ["torch", "onnx"] + (["int8"] if probe.checkpoint.int8 else [])
    batch, source = patches(args.patches, tuple(probe.input_size))
    batch = probe.prepare(list(batch)) if probe.stain is not None else batch
    rows = []
    for runtime in runtimes:
        for threads in args.threads:
            torch.set_num_threads(threads)
            predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu", runtime=runtime)
            figures = measure(predictor, batch, batch_size=args.batch_size)
            rows.append({"runtime": runtime, "threads": threads, **figures})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{probe.name} ({args.checkpoint}); {len(batch):,} patches of {source}; batch "
        f"{args.batch_size}; {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"CPUs, load average {load:.1f}"
    )
    print(f"CPU: {cpu_description()}")
    print("| runtime | threads | wall patches/s | patches per CPU-s | est. N-core patches/s |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['runtime']} | {r['threads']} | {r['wall_patches_per_s']:,.0f} | "
            f"{r['patches_per_cpu_s']:,.0f} | {r['patches_per_cpu_s'] * r['threads']:,.0f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"source": source, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
