"""Training and inference throughput of CancerNet on 50x50 patches (prints measured figures).

Runs on a full IDC-sized synthetic cache by default (277,524 patches, the size of the Kaggle set,
written once to a memmap), so that the numbers include reading from the packed cache.

    python benchmarks/bench_cancernet.py                 # CPU, all threads
    python benchmarks/bench_cancernet.py --device cuda   # on a GPU
    python benchmarks/bench_cancernet.py --patches 20000 --train-batches 50

Nothing here is a pass/fail test; compare figures taken in one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from breastpath.data.augment import augment_batch, to_model_input
from breastpath.data.loader import BatchLoader
from breastpath.models import create_model

IDC_PATCHES = 277_524


def synthetic_cache(path: Path, n: int, seed: int = 0) -> np.memmap:
    images = np.memmap(path, dtype=np.uint8, mode="w+", shape=(n, 50, 50, 3))
    rng = np.random.default_rng(seed)
    block = rng.integers(0, 256, size=(4096, 50, 50, 3), dtype=np.uint8)
    for start in range(0, n, len(block)):
        stop = min(n, start + len(block))
        images[start:stop] = block[: stop - start]
    images.flush()
    return images


def bench_inference(model, images, *, device, batch_size, batches, compiled=False) -> float:
    mean = torch.full((3,), 0.5, device=device)
    std = torch.full((3,), 0.25, device=device)
    forward = torch.compile(model) if compiled else model
    rows = np.arange(min(len(images), batch_size * (batches + 2)))
    loader = BatchLoader(images, np.zeros(len(images), np.int64), rows, batch_size=batch_size)
    seen = 0
    with torch.inference_mode():
        for i, (batch, _, _) in enumerate(loader):
            if i == 2:  # warm-up (and compilation) done
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started, seen = time.perf_counter(), 0
            forward(to_model_input(batch, mean=mean, std=std, device=device)).softmax(1).cpu()
            seen += len(batch)
    return seen / (time.perf_counter() - started)


def bench_training(model, images, *, device, batch_size, batches, amp) -> float:
    model.train()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01)
    mean = torch.full((3,), 0.5, device=device)
    std = torch.full((3,), 0.25, device=device)
    labels = np.random.default_rng(0).integers(0, 2, len(images))
    loader = BatchLoader(
        images,
        labels,
        np.arange(len(images)),
        batch_size=batch_size,
        shuffle=True,
        max_batches=batches + 3,
    )
    generator = torch.Generator().manual_seed(0)
    use_amp = amp and device.type == "cuda"
    seen = 0
    for i, (batch, target, _) in enumerate(loader):
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started, seen = time.perf_counter(), 0
        x = augment_batch(batch, mean=mean, std=std, device=device, generator=generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), target.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--patches", type=int, default=IDC_PATCHES)
    parser.add_argument("--train-batches", type=int, default=30)
    parser.add_argument("--train-batch-size", type=int, default=64)
    parser.add_argument("--infer-batches", type=int, default=40)
    parser.add_argument("--infer-batch-size", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="Also time torch.compile.")
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--json", default=None, help="Write the figures to this file.")
    args = parser.parse_args()

    device = torch.device(args.device)
    results = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "patches_in_cache": args.patches,
    }
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        images = synthetic_cache(Path(tmp) / "images.u8", args.patches)
        results["cache_write_s"] = round(time.perf_counter() - started, 2)
        model = create_model("cancernet", num_classes=2).to(device)
        model = model.to(memory_format=torch.channels_last)
        results["train_patches_per_s"] = round(
            bench_training(
                model,
                images,
                device=device,
                batch_size=args.train_batch_size,
                batches=args.train_batches,
                amp=not args.no_amp,
            ),
            1,
        )
        model.eval()
        results["infer_patches_per_s"] = round(
            bench_inference(
                model,
                images,
                device=device,
                batch_size=args.infer_batch_size,
                batches=args.infer_batches,
            ),
            1,
        )
        if args.compile:
            results["infer_compiled_patches_per_s"] = round(
                bench_inference(
                    model,
                    images,
                    device=device,
                    batch_size=args.infer_batch_size,
                    batches=args.infer_batches,
                    compiled=True,
                ),
                1,
            )
        results["idc_epoch_s_estimate"] = round(IDC_PATCHES / results["train_patches_per_s"], 1)
    for key, value in results.items():
        print(f"{key:32s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
