"""Whole-slide throughput: tissue detection, lazy tile reads and scoring (prints measured figures).

Writes a synthetic pyramidal TIFF (default 20,480 x 20,480, mostly background, two tissue
ellipses; see ``breastpath.slide.synthetic``) and times each stage of ``breastpath slide``:

    python benchmarks/bench_slide.py                       # CPU
    python benchmarks/bench_slide.py --device cuda         # on a GPU
    python benchmarks/bench_slide.py --size 40960 --level 0 --blob-scale 2

Nothing here is a pass/fail test; compare figures taken in one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from breastpath.inference.predictor import Predictor
from breastpath.slide.reader import open_slide
from breastpath.slide.synthetic import Blob, default_blobs, write_synthetic_slide
from breastpath.slide.tiling import iter_tiles, make_grid, resolve_resolution, score_grid
from breastpath.slide.tissue import detect_tissue


def _timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_480, help="level-0 side in pixels")
    parser.add_argument("--blob-scale", type=float, default=1.0, help="tissue ellipse scale")
    parser.add_argument("--level", type=int, default=0)
    parser.add_argument("--tile-size", type=int, default=50)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="scoring runs; the best is kept")
    args = parser.parse_args()

    size = args.size
    blobs = [
        Blob(b.cx, b.cy, b.rx * args.blob_scale, b.ry * args.blob_scale, b.kind)
        for b in default_blobs(size, size)
    ]
    predictor = Predictor.from_checkpoint(
        args.checkpoint, device=args.device, batch_size=args.batch_size
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.ome.tif"
        _, write_s = _timed(write_synthetic_slide, path, size=(size, size), blobs=blobs)
        with open_slide(path) as slide:
            tissue, tissue_s = _timed(detect_tissue, slide)
            resolution = resolve_resolution(slide, tile_size=args.tile_size, level=args.level)
            grid, grid_s = _timed(make_grid, slide, tissue, resolution=resolution)
            candidates = grid.n_rows * grid.n_cols

            def read_all(workers: int) -> int:
                return sum(len(i) for i, _ in iter_tiles(slide, grid, workers=workers))

            _, read_s = _timed(read_all, args.workers)
            # warm-up, then the best of a few full scoring runs (read + preprocess + model)
            predictor.predict_proba(predictor.prepare(np.zeros((64, 50, 50, 3), np.uint8)))
            score_times = []
            for _ in range(args.repeats):
                _, seconds = _timed(score_grid, slide, grid, predictor, workers=args.workers)
                score_times.append(seconds)
            score_s = min(score_times)
        file_mb = path.stat().st_size / 2**20

    device = str(predictor.device)
    figures = {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "slide": {
            "size": [size, size],
            "file_mb": round(file_mb, 1),
            "write_s": round(write_s, 2),
            "tissue_fraction": round(tissue.fraction, 5),
        },
        "grid": {
            "level": resolution.level,
            "tile_size": args.tile_size,
            "candidate_tiles": candidates,
            "tissue_tiles": len(grid),
        },
        "tissue_detection_s": round(tissue_s, 3),
        "grid_s": round(grid_s, 3),
        "tissue_plus_grid_candidates_per_s": round(candidates / (tissue_s + grid_s)),
        "tile_reads_per_s": round(len(grid) / read_s),
        "scoring_tiles_per_s": round(len(grid) / score_s, 1),
        "end_to_end_tiles_per_s": round(len(grid) / (tissue_s + grid_s + score_s), 1),
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
