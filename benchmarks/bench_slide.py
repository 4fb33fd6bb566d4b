"""Whole-slide speed against the model's own speed: tiles/s, CPU seconds per stage, peak RSS.

Every measurement runs in its own process (so its peak resident memory, ``VmHWM``, is its
own), one after another, in one run:

- ``model``: the model alone, ``Predictor.predict_proba`` on prepared 50x50 patches (the IDC
  sample when ``../shared/data/idc`` is there, as ``bench_predictor.py``), in batches of
  ``--batch-size``: the model's own patches/s, the ceiling of everything below;
- ``slide``: ``analyze_slide`` end to end (open, thumbnail tissue mask, grid, block reads in
  threads, resample, tile checks, model, verdict; no output files written) on the real
  ``CMU-1-Small-Region.svs`` (openslide, tifffile), the same scan as DICOM-WSI (wsidicom), and
  a generated 100,000 x 100,000 pyramidal TIFF (``--size``; tifffile, openslide);
- ``cohort``: ``run_cohort`` over ``--cohort`` generated small slides (one process, outputs
  written per slide and the cohort table, as ``breastpath slide FOLDER`` does).

Per run: tiles, wall seconds, tiles/s and its share of the model's patches/s, the process's CPU
seconds per tile, and the CPU seconds per tile of each stage (``open_and_mask``, ``read``
(region reads and decoding, cutting tiles), ``resample``, ``check``; summed over the threads
that ran them, :class:`breastpath.inference.stages.StageClock`), with ``model_and_rest`` the
process CPU less those stages (the model's own threads, batching, the verdict). Tiles are 50 px
at level 0 by default (``--level``), so the small real slide gives about a thousand tiles.

``--src DIR`` runs the children on another source tree (``PYTHONPATH=DIR``: e.g. ``git archive
HEAD~3 src | tar -x -C /tmp/before`` then ``--src /tmp/before/src``), for before/after figures
in one run; a tree without the stage clock reports no stages.

    python benchmarks/bench_slide.py                              # CPU: all of the above
    python benchmarks/bench_slide.py --only cohort --cohort 50
    python benchmarks/bench_slide.py --src /tmp/before/src --repeat 2

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
STAGE_NAMES = ("open_and_mask", "read", "resample", "check")


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB (Linux), NaN elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


def _predictor(args: argparse.Namespace):
    import numpy as np

    from breastpath.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(
        args.checkpoint, device=args.device, batch_size=args.batch_size
    )
    predictor.predict_proba(predictor.prepare(np.zeros((64, 50, 50, 3), np.uint8)))  # warm-up
    import scipy.ndimage  # noqa: F401  - imported once per process by the mask, like torch

    return predictor


def _clock():
    try:
        from breastpath.inference.stages import StageClock
    except ImportError:  # an older source tree (--src)
        return None
    return StageClock()


def _figures(tiles: int, wall: float, cpu: float, clock, rss_before: float) -> dict:
    out = {
        "tiles": tiles,
        "wall_s": round(wall, 2),
        "tiles_per_s": round(tiles / wall),
        "cpu_ms_per_tile": round(1000 * cpu / max(tiles, 1), 3),
        "rss_before_mb": rss_before,
        "peak_rss_mb": _status_mb("VmHWM"),
    }
    if clock is not None:
        seconds = clock.seconds()
        stages = {k: seconds.get(k, 0.0) for k in STAGE_NAMES}
        stages["model_and_rest"] = cpu - sum(stages.values())
        out["stage_cpu_ms_per_tile"] = {
            k: round(1000 * v / max(tiles, 1), 3) for k, v in stages.items()
        }
    return out


def run_model(args: argparse.Namespace) -> dict:
    """The model alone on prepared patches (the child side)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_predictor import patches

    predictor = _predictor(args)
    batch, source = patches(args.patches, (50, 50))
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(batch), args.batch_size):
        chunk = predictor.prepare(batch[start : start + args.batch_size])
        predictor.cancer_probability(predictor.predict_proba(chunk))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"source": source, **_figures(len(batch), wall, cpu, None, float("nan"))}


def run_slide(args: argparse.Namespace) -> dict:
    """``analyze_slide`` on one slide with one backend (the child side)."""
    from breastpath.slide.analyze import analyze_slide

    predictor = _predictor(args)
    clock = _clock()
    extra = {} if clock is None else {"clock": clock}
    rss_before = _status_mb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    result = analyze_slide(
        args.path, predictor, backend=args.backend, level=args.level, batch_size=args.batch_size,
        workers=args.workers, **extra,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "backend": result.info["slide"]["backend"],
        "level0": result.info["slide"]["dimensions"],
        "tiles_scored": int(result.scores.scored.sum()),
        **_figures(len(result.grid), wall, cpu, clock, rss_before),
    }


def run_cohort_child(args: argparse.Namespace) -> dict:
    """``run_cohort`` over a folder of slides (the child side)."""
    from breastpath.slide.cohort import CohortOptions, run_cohort
    from breastpath.slide.sources import discover

    predictor = _predictor(args)
    clock = _clock()
    sources = discover([str(args.path)])
    options = CohortOptions(level=args.level, batch_size=args.batch_size, workers=args.workers)
    extra = {} if clock is None else {"clock": clock}
    rss_before = _status_mb("VmRSS")
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            rows = run_cohort(sources, predictor, out_dir=out, options=options, **extra)
        except TypeError:  # an older tree: no clock
            clock, extra = None, {}
            rows = run_cohort(sources, predictor, out_dir=out, options=options)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tiles = sum(int(r.get("tiles_read") or 0) for r in rows)
    statuses = sorted({str(r["status"]).split(":")[0] for r in rows})
    return {
        "slides": len(rows),
        "statuses": statuses,
        **_figures(tiles, wall, cpu, clock, rss_before),
    }


def _child(mode: str, args: argparse.Namespace, path: Path | None = None, backend: str = "auto"):
    command = [
        sys.executable, __file__, "--child", mode, "--backend", backend,
        "--level", str(args.level), "--checkpoint", args.checkpoint, "--device", args.device,
        "--batch-size", str(args.batch_size), "--workers", str(args.workers),
        "--patches", str(args.patches),
    ]  # fmt: skip
    if path is not None:
        command += ["--path", str(path)]
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.src, env.get("PYTHONPATH")]))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-3:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_slides(folder: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The generated 100k slide and the cohort folder; their write times."""
    from breastpath.slide.synthetic import Blob, default_blobs, write_synthetic_slide

    def scaled(width: int, height: int, scale: float) -> list[Blob]:
        return [
            Blob(b.cx, b.cy, b.rx * scale, b.ry * scale, b.kind)
            for b in default_blobs(width, height)
        ]

    big = folder / "synthetic.tif"
    if args.only in (None, "slide"):
        write_synthetic_slide(
            big, size=(args.size, args.size), downsamples=(1, 4, 16, 64, 256),
            blobs=scaled(args.size, args.size, args.blob_scale), pyramid="pages",
        )  # fmt: skip
    cohort = folder / "cohort"
    cohort.mkdir()
    if args.only in (None, "cohort"):
        width, height = args.cohort_size
        for i in range(args.cohort):
            write_synthetic_slide(
                cohort / f"slide{i:03d}.tif", size=(width, height), downsamples=(1, 4, 16),
                blobs=scaled(width, height, 4.0), pyramid="pages", seed=i,
            )  # fmt: skip
    return {"big": big, "cohort": cohort}


def plan(
    args: argparse.Namespace, slides: dict[str, Path]
) -> list[tuple[str, str, Path | None, str]]:
    """``(label, mode, path, backend)`` of every child, in order."""
    runs: list[tuple[str, str, Path | None, str]] = []
    if args.only in (None, "model"):
        runs.append(("model alone", "model", None, "auto"))
    if args.only in (None, "slide"):
        svs, dicom = WSI / "CMU-1-Small-Region.svs", WSI / "CMU-1-Small-Region-dicom"
        if svs.is_file():
            runs += [(svs.name, "slide", svs, b) for b in ("openslide", "tifffile")]
            runs.append((dicom.name, "slide", dicom, "wsidicom"))
        name = f"synthetic {args.size}x{args.size}"
        runs += [(name, "slide", slides["big"], b) for b in ("tifffile", "openslide")]
    if args.only in (None, "cohort"):
        label = f"cohort of {args.cohort} generated {args.cohort_size[0]}x{args.cohort_size[1]}"
        runs.append((label, "cohort", slides["cohort"], "auto"))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="synthetic level-0 side")
    parser.add_argument("--blob-scale", type=float, default=0.5, help="synthetic tissue scale")
    parser.add_argument("--cohort", type=int, default=50, help="generated slides in the cohort")
    parser.add_argument("--cohort-size", type=int, nargs=2, default=(4000, 3000))
    parser.add_argument("--level", type=int, default=0)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--patches", type=int, default=20_000, help="patches for the model alone")
    parser.add_argument("--only", choices=("model", "slide", "cohort"))
    parser.add_argument("--src", help="run the children on this source tree (PYTHONPATH)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every child")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="auto", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = {"model": run_model, "slide": run_slide, "cohort": run_cohort_child}[args.child]
        print(json.dumps(child(args)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        slides = write_slides(Path(tmp), args)
        for round_ in range(args.repeat):
            for label, mode, path, backend in plan(args, slides):
                figures = _child(mode, args, path, backend)
                results.append({"round": round_ + 1, "run": label, "backend": backend, **figures})
                print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "src": args.src or "this tree",
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()], "runs": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
