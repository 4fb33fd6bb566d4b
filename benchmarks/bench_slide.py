"""Whole-slide speed and memory per reader backend: tiles/s and peak RSS (prints measured figures).

Each (slide, backend) runs in its own process, so its peak resident memory (``VmHWM``) is its
own; the RSS before the slide is opened (Python, torch and the model loaded) is printed beside
it, so the difference is what reading and scoring the slide cost. Slides:

- ``svs``: the real Aperio file ``CMU-1-Small-Region.svs`` (openslide, tifffile) and the same
  scan as DICOM-WSI (wsidicom), from ``../shared/data/wsi`` when present;
- ``synthetic``: a generated pyramidal TIFF, 100,000 x 100,000 by default (30 GB of level-0
  pixels, a few MB on disk; two tissue ellipses, ``--blob-scale`` sets their size; see
  ``breastpath.slide.synthetic``), read by tifffile and openslide.

Tiles are 50 px at level 0 (``--level``), so every tissue tile is a level-0 read. Figures:
``read_tiles_per_s`` (reads only), ``score_tiles_per_s`` (reads, tile checks, model) and
``end_to_end_tiles_per_s`` (tissue mask, grid, reads, checks, model).

    python benchmarks/bench_slide.py                      # CPU, all slides and backends
    python benchmarks/bench_slide.py --size 40000 --device cuda --workers 4

Nothing here is a pass/fail test; compare figures taken in one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WSI = Path(os.environ.get("BREASTPATH_SHARED_DATA", REPO.parent / "shared" / "data")) / "wsi"


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


def run_one(args: argparse.Namespace) -> dict:
    """Time one slide with one backend in this process (the child side)."""
    import numpy as np
    import torch

    from breastpath.inference.predictor import Predictor
    from breastpath.slide.reader import open_slide
    from breastpath.slide.tiling import iter_tiles, make_grid, resolve_resolution, score_grid
    from breastpath.slide.tissue import detect_tissue

    predictor = Predictor.from_checkpoint(
        args.checkpoint, device=args.device, batch_size=args.batch_size
    )
    predictor.predict_proba(predictor.prepare(np.zeros((64, 50, 50, 3), np.uint8)))  # warm-up
    rss_before = _status_mb("VmRSS")
    started = time.perf_counter()
    with open_slide(args.path, backend=args.backend) as slide:
        tissue = detect_tissue(slide)
        resolution = resolve_resolution(slide, tile_size=args.tile_size, level=args.level)
        grid = make_grid(slide, tissue, resolution=resolution)
        mask_s = time.perf_counter() - started
        t0 = time.perf_counter()
        read = sum(len(i) for i, _ in iter_tiles(slide, grid, workers=args.workers))
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = score_grid(slide, grid, predictor, workers=args.workers)
        score_s = time.perf_counter() - t0
        level0 = slide.dimensions
    return {
        "backend": args.backend,
        "level0": list(level0),
        "level0_gb": round(level0[0] * level0[1] * 3 / 1e9, 2),
        "device": str(predictor.device),
        "torch_threads": torch.get_num_threads(),
        "tiles": read,
        "tiles_scored": int(scores.scored.sum()),
        "mask_and_grid_s": round(mask_s, 2),
        "read_tiles_per_s": round(read / read_s),
        "score_tiles_per_s": round(read / score_s),
        "end_to_end_tiles_per_s": round(read / (mask_s + score_s)),
        "rss_before_slide_mb": rss_before,
        "peak_rss_mb": _status_mb("VmHWM"),
    }


def _child(path: Path, backend: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, __file__, "--child", "--path", str(path), "--backend", backend,
        "--level", str(args.level), "--tile-size", str(args.tile_size),
        "--checkpoint", args.checkpoint, "--device", args.device,
        "--batch-size", str(args.batch_size), "--workers", str(args.workers),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"backend": backend, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="synthetic level-0 side")
    parser.add_argument(
        "--blob-scale", type=float, default=0.5, help="synthetic tissue ellipse scale"
    )
    parser.add_argument("--level", type=int, default=0)
    parser.add_argument("--tile-size", type=int, default=50)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return

    from breastpath.slide.synthetic import Blob, default_blobs, write_synthetic_slide

    runs = []
    if (WSI / "CMU-1-Small-Region.svs").is_file():
        for backend in ("openslide", "tifffile"):
            runs.append(("CMU-1-Small-Region.svs", WSI / "CMU-1-Small-Region.svs", backend))
        runs.append(("CMU-1-Small-Region-dicom", WSI / "CMU-1-Small-Region-dicom", "wsidicom"))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.tif"
        t0 = time.perf_counter()
        blobs = [
            Blob(b.cx, b.cy, b.rx * args.blob_scale, b.ry * args.blob_scale, b.kind)
            for b in default_blobs(args.size, args.size)
        ]
        write_synthetic_slide(
            path,
            size=(args.size, args.size),
            downsamples=(1, 4, 16, 64, 256),
            blobs=blobs,
            pyramid="pages",
        )
        write_s = time.perf_counter() - t0
        name = f"synthetic {args.size}x{args.size} ({path.stat().st_size / 2**20:.1f} MB)"
        for backend in ("tifffile", "openslide"):
            runs.append((name, path, backend))
        for label, source, backend in runs:
            results.append({"slide": label, **_child(source, backend, args)})
            print(json.dumps(results[-1]), file=sys.stderr)
    figures = {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "synthetic_write_s": round(write_s, 1),
        "runs": results,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
