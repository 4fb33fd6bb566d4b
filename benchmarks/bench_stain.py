"""Stain normalization throughput: breastpath vs staintools and torchstain, side by side.

Measures tiles per second for ``fit`` (a target) and ``transform`` (a new tile to a fitted
target; for Macenko and Vahadane this includes finding the tile's own stain matrix) on 448x448
tiles, one at a time and batched, and on batches of 50x50 patches, for each method. Reference
implementations are measured where installed (``pip install -e '.[stain-ref]'``):
staintools (Vahadane with SPAMS, Macenko), torchstain numpy backend (Macenko, Reinhard).

Tiles are real H&E images from ../shared/data when present (BreakHis crops and IDC patches),
otherwise synthetic two-stain tiles.

    python benchmarks/bench_stain.py                  # CPU
    python benchmarks/bench_stain.py --device cuda    # ours on a GPU too (batched torch)
    python benchmarks/bench_stain.py --quick          # fewer repeats

Nothing here is a pass/fail test; compare figures taken in one run on one machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from breastpath.stain import StainWarning, extract_stain_matrix, get_normalizer

SHARED = Path(
    os.environ.get(
        "BREASTPATH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)


# --------------------------------------------------------------------------- inputs
def _synthetic(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    he = np.array([[0.62, 0.72, 0.31], [0.20, 0.93, 0.30]])
    conc = rng.gamma(2.0, 0.25, (n, size * size, 2)) * (rng.random((n, size * size, 2)) < 0.6)
    conc[rng.random((n, size * size)) < 0.2] = 0
    rgb = 256 * np.exp(-(conc @ he)) - 1
    return np.clip(rgb, 0, 255).astype(np.uint8).reshape(n, size, size, 3)


def load_inputs(n_tiles: int, n_patches: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(tiles N x 448 x 448 x 3, patches M x 50 x 50 x 3, description)."""
    from PIL import Image

    files = sorted((SHARED / "breakhis").rglob("*.png")) if (SHARED / "breakhis").is_dir() else []
    patch_files = sorted((SHARED / "idc").rglob("*.png")) if (SHARED / "idc").is_dir() else []
    rng = np.random.default_rng(0)
    if files and patch_files:
        tiles = []
        for path in files[:n_tiles]:
            image = np.asarray(Image.open(path).convert("RGB"))
            y, x = (image.shape[0] - 448) // 2, (image.shape[1] - 448) // 2
            tiles.append(image[y : y + 448, x : x + 448])
        while len(tiles) < n_tiles:
            tiles.append(tiles[len(tiles) % len(files)][::-1].copy())
        picks = rng.choice(len(patch_files), min(len(patch_files), 4 * n_patches), replace=False)
        patches = [np.asarray(Image.open(patch_files[i]).convert("RGB")) for i in picks]
        patches = [p for p in patches if p.shape == (50, 50, 3)][:n_patches]
        return np.stack(tiles), np.stack(patches), "real: BreakHis 448x448 crops, IDC 50x50 patches"
    return (
        _synthetic(rng, n_tiles, 448),
        _synthetic(rng, n_patches, 50),
        "synthetic two-stain tiles (../shared/data not found)",
    )


# --------------------------------------------------------------------------- timing
def rate(fn: Callable[[int], object], items_per_call: int, calls: int, repeats: int) -> float:
    """Items per second: median over ``repeats`` of ``calls`` calls ``fn(i)`` (after a warm-up)."""
    fn(0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        times.append((time.perf_counter() - start) / calls)
    return items_per_call / statistics.median(times)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


# --------------------------------------------------------------------------- runs
def bench_ours(method, tiles, patches, *, device, repeats, batch) -> dict[str, float]:
    options = {"device": device} if device else {}
    n = len(tiles)
    data_tiles, data_patches = tiles, patches
    if device:
        import torch

        data_tiles = torch.from_numpy(tiles).to(device)
        data_patches = torch.from_numpy(patches).to(device)

    def sync() -> None:
        if device and device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    fitted = get_normalizer(method, **options).fit(tiles[0])

    def fit(i: int) -> None:
        get_normalizer(method, **options).fit(data_tiles[i % n])
        sync()

    def one(i: int) -> None:
        fitted.transform(data_tiles[i % n])
        sync()

    def many(i: int) -> None:
        fitted.transform(data_tiles[:batch])
        sync()

    def small(i: int) -> None:
        fitted.transform(data_patches)
        sync()

    return {
        "fit": rate(fit, 1, n, repeats),
        "transform": rate(one, 1, n, repeats),
        "batched": rate(many, batch, 1, repeats),
        "patches": rate(small, len(patches), 1, repeats),
    }


def bench_staintools(method, tiles, patches, *, repeats) -> dict[str, float]:
    import staintools

    def works(tile: np.ndarray) -> bool:  # staintools asserts on a negative Macenko stain entry
        try:
            staintools.StainNormalizer(method).fit(tile.copy())
        except AssertionError:
            return False
        return True

    tiles = [t for t in tiles[:6] if works(t)][:3]
    if not tiles:
        raise RuntimeError(f"staintools {method} failed on every benchmark tile")
    n = len(tiles)
    normalizer = staintools.StainNormalizer(method)
    normalizer.fit(tiles[0].copy())

    def fit(i: int) -> None:
        staintools.StainNormalizer(method).fit(tiles[i % n].copy())

    def one(i: int) -> None:
        normalizer.transform(tiles[i % n].copy())

    def small(i: int) -> None:  # one patch at a time: staintools has no batches
        normalizer.transform(patches[i % len(patches)].copy())

    slow = method == "vahadane"  # SPAMS learns for about a second per image
    reps = 1 if slow else repeats
    return {
        "fit": rate(fit, 1, n, reps),
        "transform": rate(one, 1, n, reps),
        "patches": rate(small, 1, 3 if slow else len(patches), reps),
    }


def bench_torchstain(method, tiles, patches, *, repeats) -> dict[str, float]:
    import torchstain

    n = len(tiles)
    kind = {"macenko": "MacenkoNormalizer", "reinhard": "ReinhardNormalizer"}[method]

    def make():
        return getattr(torchstain.normalizers, kind)(backend="numpy")

    normalizer = make()
    normalizer.fit(tiles[0])
    run = (
        (lambda x: normalizer.normalize(x, stains=False))
        if method == "macenko"
        else normalizer.normalize
    )

    def fit(i: int) -> None:
        make().fit(tiles[i % n])

    def one(i: int) -> None:
        run(tiles[i % n])

    def small(i: int) -> None:
        run(patches[i % len(patches)])

    return {
        "fit": rate(fit, 1, n, repeats),
        "transform": rate(one, 1, n, repeats),
        "patches": rate(small, 1, len(patches), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="also run ours with torch on this device")
    parser.add_argument("--tiles", type=int, default=8, help="448x448 tiles")
    parser.add_argument("--patches", type=int, default=256, help="50x50 patches per batch")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    warnings.simplefilter("ignore", StainWarning)

    tiles, patches, source = load_inputs(args.tiles, args.patches)
    have = {
        name: importlib.util.find_spec(name) is not None
        for name in ("staintools", "spams", "torchstain")
    }
    have["staintools"] = have["staintools"] and have["spams"]
    print(f"# stain normalization benchmark ({source})")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, numpy {np.__version__}"
    )
    print(
        f"# tiles/s; 'transform' = one 448x448 tile per call; 'batched' = {args.tiles} tiles "
        f"per call; 'patches' = 50x50 patches ({args.patches} per call for ours, one per call "
        "for the references)"
    )

    rows: list[tuple[str, str, dict[str, float]]] = []
    for method in ("reinhard", "macenko", "vahadane"):
        rows.append(
            (
                method,
                "breastpath (numpy)",
                bench_ours(method, tiles, patches, device=None, repeats=repeats, batch=args.tiles),
            )
        )
        if args.device:
            label = f"breastpath (torch {args.device})"
            rows.append(
                (
                    method,
                    label,
                    bench_ours(
                        method,
                        tiles,
                        patches,
                        device=args.device,
                        repeats=repeats,
                        batch=args.tiles,
                    ),
                )
            )
        if method in ("vahadane", "macenko") and have["staintools"]:
            rows.append(
                (method, "staintools", bench_staintools(method, tiles, patches, repeats=repeats))
            )
        if method in ("macenko", "reinhard") and have["torchstain"]:
            rows.append(
                (
                    method,
                    "torchstain (numpy)",
                    bench_torchstain(method, tiles, patches, repeats=repeats),
                )
            )

    columns = ("fit", "transform", "batched", "patches", "fit+transform")
    header = f"{'method':<9} {'implementation':<22} " + " ".join(f"{c:>13}" for c in columns)
    print(header)
    print("-" * len(header))
    for method, label, r in rows:
        both = 1.0 / (1.0 / r["fit"] + 1.0 / r["transform"])
        values = (r["fit"], r["transform"], r.get("batched"), r["patches"], both)
        print(f"{method:<9} {label:<22} " + " ".join(f"{fmt(v):>13}" for v in values))

    if have["staintools"]:
        from staintools.stain_extraction.vahadane_stain_extractor import VahadaneStainExtractor

        ours = {label: r for m, label, r in rows if m == "vahadane"}
        ref = ours.pop("staintools")
        mine = ours["breastpath (numpy)"]
        speed = lambda r: 1.0 / (1.0 / r["fit"] + 1.0 / r["transform"])  # noqa: E731
        print(
            "\nvahadane speed-up over staintools (CPU): "
            f"fit+transform {speed(mine) / speed(ref):.0f}x, "
            f"50x50 patches {mine['patches'] / ref['patches']:.0f}x"
        )
        angles = []
        for tile in tiles[:3]:
            a = extract_stain_matrix(tile, method="vahadane")
            b = VahadaneStainExtractor.get_stain_matrix(tile.copy())
            angles.append(np.degrees(np.arccos(np.clip((a * b).sum(1), -1, 1))))
        print(
            "stain vectors vs staintools on the benchmark tiles (degrees, H and E): "
            + ", ".join(f"{h:.2f}/{e:.2f}" for h, e in angles)
        )
    missing = [name for name in ("staintools", "torchstain") if not have[name]]
    missing.append("torch-staintools")
    print("not measured (not installed): " + ", ".join(missing))


if __name__ == "__main__":
    main()
