"""Deep Zoom tile latency of the slide viewer (``breastpath serve --slides``), beside the anchor.

For each slide (the real SVS, through OpenSlide's ``DeepZoomGenerator``, and its DICOM copy,
through :class:`breastpath.slide.deepzoom.DeepZoom`), starts ``breastpath serve --slides`` in a
child process on a free port of 127.0.0.1 and requests every tile of the three deepest zoom
levels once (cold: the server's tile cache is empty; a fresh server per run), in a seeded random
order, from 1 and from 8 concurrent keep-alive clients; then the same tiles again from 8 clients
(warm: from the cache). Prints p50/p95/max latency and tiles/s per run, every answer checked to be
a 200 JPEG.

The anchor: OpenSlide's own ``DeepZoomGenerator`` in this process, each tile ``get_tile`` then
JPEG-encoded (quality 75), over the same tiles, one at a time and from 8 threads.

    python benchmarks/bench_viewer.py                       # the slides in ../shared/data/wsi
    python benchmarks/bench_viewer.py --json out.json
    python benchmarks/bench_viewer.py --readers --slides    # only the in-process generators

Nothing here is a pass/fail test; compare figures taken on one machine.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import queue
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BREASTPATH_SHARED_DATA", REPO.parent / "shared" / "data"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(port: int, folder: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "breastpath.cli.main", "serve", "--slides", str(folder)]
    command += ["--host", HOST, "--port", str(port), "--no-access-log"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("server did not start within 90 s")


def deepest_tiles(levels: list[tuple[int, int]], count: int = 3) -> list[tuple[int, int, int]]:
    """``(level, col, row)`` of every tile of the ``count`` deepest levels."""
    top = len(levels) - 1
    return [
        (level, col, row)
        for level in range(top, top - count, -1)
        for col in range(levels[level][0])
        for row in range(levels[level][1])
    ]


def drive(port: int, paths: list[str], clients: int) -> tuple[list[float], float]:
    """Latencies (s) of GETting every path once, by ``clients`` keep-alive clients."""
    jobs: queue.Queue[str] = queue.Queue()
    for path in paths:
        jobs.put(path)
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        while True:
            try:
                path = jobs.get_nowait()
            except queue.Empty:
                return
            started = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200 or (path.endswith(".jpeg") and body[:2] != b"\xff\xd8"):
                failures.append(f"{path}: {response.status}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"bad answers: {failures[:5]}")
    return latencies, time.perf_counter() - started


def anchor(svs: Path, tiles: list[tuple[int, int, int]], clients: int) -> tuple[list[float], float]:
    """OpenSlide's DeepZoomGenerator + JPEG encoding in this process (a fresh slide handle)."""
    from openslide import OpenSlide
    from openslide.deepzoom import DeepZoomGenerator

    generator = DeepZoomGenerator(OpenSlide(str(svs)), tile_size=254, overlap=1)
    jobs: queue.Queue[tuple[int, int, int]] = queue.Queue()
    for tile in tiles:
        jobs.put(tile)
    latencies: list[float] = []

    def worker() -> None:
        while True:
            try:
                level, col, row = jobs.get_nowait()
            except queue.Empty:
                return
            started = time.perf_counter()
            buffer = io.BytesIO()
            generator.get_tile(level, (col, row)).save(buffer, "JPEG", quality=75)
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started


def readers(svs: Path, tiles: list[tuple[int, int, int]]) -> list[dict]:
    """In-process, one thread: the same tiles (+ JPEG) from OpenSlide's generator and from
    :class:`~breastpath.slide.deepzoom.DeepZoom` over the OpenSlide and the tifffile readers."""
    from openslide import OpenSlide
    from openslide.deepzoom import DeepZoomGenerator

    from breastpath.slide.deepzoom import DeepZoom
    from breastpath.slide.reader import open_slide

    makers = {
        "in-process: DeepZoomGenerator": lambda: DeepZoomGenerator(OpenSlide(str(svs))),
        "in-process: DeepZoom over the openslide reader": lambda: DeepZoom(
            open_slide(svs, backend="openslide")
        ),
        "in-process: DeepZoom over the tifffile reader": lambda: DeepZoom(
            open_slide(svs, backend="tifffile")
        ),
    }
    rows = []
    for name, make in makers.items():
        generator = make()
        latencies = []
        started = time.perf_counter()
        for level, col, row in tiles:
            begun = time.perf_counter()
            generator.get_tile(level, (col, row)).save(io.BytesIO(), "JPEG", quality=75)
            latencies.append(time.perf_counter() - begun)
        rows.append(summary(f"{name}, 1 thread", latencies, time.perf_counter() - started))
    return rows


def summary(name: str, latencies: list[float], wall: float) -> dict:
    ms = np.asarray(latencies) * 1000
    return {
        "run": name,
        "tiles": len(latencies),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "max_ms": round(float(ms.max()), 1),
        "tiles_per_s": round(len(latencies) / wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=SHARED / "wsi")
    parser.add_argument(
        "--slides", nargs="*", default=["CMU-1-Small-Region", "CMU-1-Small-Region-dicom"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--readers", action="store_true", help="also compare the generators in-process"
    )
    args = parser.parse_args(argv)
    svs = args.folder / "CMU-1-Small-Region.svs"
    rows = []
    from openslide import OpenSlide
    from openslide.deepzoom import DeepZoomGenerator

    levels = list(DeepZoomGenerator(OpenSlide(str(svs))).level_tiles)
    tiles = deepest_tiles(levels)
    random.Random(args.seed).shuffle(tiles)
    print(f"{len(tiles)} tiles of the three deepest levels; load {os.getloadavg()[0]:.2f}")
    for clients in (1, 8):
        rows.append(
            summary(
                f"anchor: DeepZoomGenerator + JPEG, {clients} thread(s)",
                *anchor(svs, tiles, clients),
            )
        )
        print(rows[-1])
    if args.readers:
        for row in readers(svs, tiles):
            rows.append(row)
            print(row)
    for slide in args.slides:
        paths = [f"/api/slides/{slide}_files/{lv}/{c}_{r}.jpeg" for lv, c, r in tiles]
        for clients in (1, 8):
            port = free_port()
            server = start_server(port, args.folder)
            try:
                drive(port, [f"/api/slides/{slide}.dzi"], 1)  # open the slide first
                rows.append(
                    summary(f"{slide}: cold, {clients} client(s)", *drive(port, paths, clients))
                )
                print(rows[-1])
                if clients == 8:
                    rows.append(
                        summary(f"{slide}: warm (cached), 8 clients", *drive(port, paths, 8))
                    )
                    print(rows[-1])
            finally:
                server.terminate()
                server.wait(timeout=30)
    print()
    print("| run | tiles | p50 ms | p95 ms | max ms | tiles/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        cells = [row[k] for k in ("run", "tiles", "p50_ms", "p95_ms", "max_ms", "tiles_per_s")]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        meta = {"python": platform.python_version(), "cpus": os.cpu_count()}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
