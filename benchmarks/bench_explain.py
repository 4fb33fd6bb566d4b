"""Grad-CAM under load (issue 29, defect 8), against a real ``breastpath serve`` on 127.0.0.1.

Patch clients send one 50x50 patch to ``POST /api/predict`` back to back while explain clients
send a large image to ``POST /api/predict?explain=true`` back to back, for a fixed time. Reports
the patch latencies (p50, p99, max), the explain answers by status with their latencies (and the
``Retry-After`` of the 503s), and the resident memory of the server and its decode workers
(baseline, peak sampled every 50 ms, and 2 s after the load).

    python benchmarks/bench_explain.py                       # 24 + 8 clients, 1600² images, 30 s
    python benchmarks/bench_explain.py --patch-clients 8 --explain-clients 2 --seconds 10
    python benchmarks/bench_explain.py --polite     # explain clients honour Retry-After

Figures depend on the machine and its load: quote them with it.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from bench_abuse import HOST, TreeSampler, memory, multipart, start_server, tree_rss


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def tissue(side: int, seed: int = 0) -> np.ndarray:
    """A pink-and-purple picture with blobs at a few scales (the quality gate calls it tissue;
    the cost of Grad-CAM does not depend on what it shows)."""
    rng = np.random.default_rng(seed)
    base = np.array([225, 170, 200], np.float64)
    out = np.repeat(np.repeat(rng.normal(0, 18, (side // 4 + 1, side // 4 + 1, 1)), 4, 0), 4, 1)
    image = base + out[:side, :side] * np.array([1.0, 1.4, 0.8])
    nuclei = rng.random((side, side)) < 0.02
    image[nuclei] = [90, 40, 140]
    return np.clip(image, 0, 255).astype(np.uint8)


def _client(port, path, data, name, stop, out, polite=False) -> None:
    body, kind = multipart([("file", name, data)])
    conn = http.client.HTTPConnection(HOST, port, timeout=300)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": kind})
            response = conn.getresponse()
            response.read()
            status, retry = response.status, response.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as exc:
            status, retry = type(exc).__name__, None
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=300)
        out.append((status, time.perf_counter() - started, retry))
        if polite and status == 503 and retry:
            stop.wait(float(retry))  # a polite client waits as told
            conn.close()  # the server closed the idle keep-alive connection meanwhile


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def run(args: argparse.Namespace) -> dict:
    patch, large = _png(tissue(50, seed=1)), _png(tissue(args.side, seed=2))
    server, port = start_server(args.server_arg)
    try:
        time.sleep(2.0)
        baseline = tree_rss(server.pid)[0]
        sampler = TreeSampler(server.pid)
        stop = threading.Event()
        patches: list = []
        explains: list = []
        threads = [
            threading.Thread(
                target=_client, args=(port, "/api/predict", patch, "p.png", stop, patches)
            )
            for _ in range(args.patch_clients)
        ] + [
            threading.Thread(
                target=_client,
                args=(port, "/api/predict?explain=true", large, "big.png", stop, explains),
                kwargs={"polite": args.polite},
            )
            for _ in range(args.explain_clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(120)
        time.sleep(2.0)
        after = tree_rss(server.pid)[0]
        sampler.stop.set()
        server_peak = memory(server.pid)["VmHWM"]
    finally:
        server.terminate()
        server.wait(20)
    patch_s = [s for status, s, _ in patches if status == 200]
    by_status: dict[str, list[float]] = {}
    for status, seconds, _ in explains:
        by_status.setdefault(str(status), []).append(seconds)
    retry = Counter(r for status, _, r in explains if status == 503)
    return {
        "patch_clients": args.patch_clients,
        "explain_clients": args.explain_clients,
        "side": args.side,
        "seconds": args.seconds,
        "polite": args.polite,
        "patches": dict(Counter(str(status) for status, _, _ in patches)),
        "patch_p50_s": _percentile(patch_s, 50),
        "patch_p99_s": _percentile(patch_s, 99),
        "patch_max_s": round(max(patch_s, default=float("nan")), 3),
        "explains": {k: len(v) for k, v in by_status.items()},
        "explain_seconds": {
            k: [_percentile(v, 0), _percentile(v, 50), _percentile(v, 100)]
            for k, v in by_status.items()
        },
        "retry_after": dict(retry),
        "rss_baseline_mib": round(baseline),
        "rss_peak_mib": round(max(sampler.peaks.values(), default=0.0)),
        "rss_after_mib": round(after),
        "server_vmhwm_mib": round(server_peak),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch-clients", type=int, default=24)
    parser.add_argument("--explain-clients", type=int, default=8)
    parser.add_argument("--side", type=int, default=1600, help="side of the explained image")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--polite", action="store_true", help="explain clients wait for Retry-After after a 503"
    )
    parser.add_argument("--server-arg", action="append", default=[], help="extra serve option")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    bad = [k for k in (*report["patches"], *report["explains"]) if k not in ("200", "503")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
