"""Load test of the web API on 127.0.0.1: single-patch ``POST /api/predict`` throughput and latency.

Starts ``breastpath serve`` in a child process on a free port of 127.0.0.1 (never another host),
then drives it with 1, 8 and 32 concurrent keep-alive clients for a bounded time and number of
requests each, and prints requests/s, p50/p95/p99 latency and errors per level, plus the server's
batching statistics. The clients are a few lines of asyncio over raw sockets, so that the load
generator costs little CPU next to the server on a small machine.

    python benchmarks/bench_serve.py                          # default model, a real IDC patch
    python benchmarks/bench_serve.py --seconds 5 --clients 1 8 32 --json out.json

Nothing here is a pass/fail test (the issue's target: > 200 predictions/s on 2 CPU cores with
CancerNet, no errors); compare figures taken on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BREASTPATH_SHARED_DATA", REPO.parent / "shared" / "data"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def patch_bytes() -> tuple[str, bytes]:
    """A real IDC patch when ../shared/data is there, else a generated 50x50 PNG."""
    found = sorted((SHARED / "idc").glob("*/1/*.png"))[:1]
    if found:
        return found[0].name, found[0].read_bytes()
    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(90, 230, (50, 50, 3), dtype=np.uint8)).save(buffer, "PNG")
    return "generated.png", buffer.getvalue()


def multipart_request(port: int, name: str, data: bytes) -> bytes:
    boundary = "breastpathbench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


async def client(port: int, request: bytes, deadline: float, budget: list[int], out: dict) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode("latin-1").partition(":")
                if key.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length)
            elapsed = time.perf_counter() - started
            status = int(status_line.split()[1]) if status_line else 0
            if status == 200 and b'"probability"' in body:
                out["latencies"].append(elapsed)
            else:
                out["errors"].append(status)
                if not status_line:
                    break
    finally:
        writer.close()


async def level(port: int, request: bytes, clients: int, seconds: float, cap: int) -> dict:
    out: dict = {"latencies": [], "errors": []}
    budget = [cap]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(client(port, request, deadline, budget, out) for _ in range(clients)))
    wall = time.perf_counter() - started
    lat = np.asarray(out["latencies"]) * 1000.0
    return {
        "clients": clients,
        "requests": int(lat.size),
        "errors": len(out["errors"]),
        "seconds": round(wall, 2),
        "requests_per_s": round(lat.size / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 2) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
    }


def get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def start_server(port: int, args: argparse.Namespace) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "breastpath.cli.main",
        "serve",
        "--checkpoint",
        args.checkpoint,
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-access-log",
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            get_json(port, "/api/health")
            return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("server did not start within 60 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=8.0, help="per level (bounded)")
    parser.add_argument("--max-requests", type=int, default=20_000, help="per level (bounded)")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=0, help="server model threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    port = free_port()
    name, data = patch_bytes()
    request = multipart_request(port, name, data)
    server = start_server(port, args)
    try:
        asyncio.run(level(port, request, 4, args.warmup, args.max_requests))
        before = get_json(port, "/api/models")["queue"]
        rows = [
            asyncio.run(level(port, request, n, args.seconds, args.max_requests))
            for n in args.clients
        ]
        after = get_json(port, "/api/models")["queue"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    batches = after["batches"] - before["batches"]
    images = after["images"] - before["images"]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}",
        "checkpoint": args.checkpoint,
        "payload": f"{name} ({len(data)} bytes)",
        "levels": rows,
        "server_batches": batches,
        "mean_batch": round(images / batches, 2) if batches else None,
        "largest_batch": after["largest_batch"],
    }
    print(f"{report['machine']}; payload {report['payload']}")
    print(
        f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    )
    for row in rows:
        print(
            f"{row['clients']:>7} {row['requests']:>8} {row['errors']:>6} "
            f"{row['requests_per_s']:>8} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['p99_ms']:>8}"
        )
    print(
        f"server: {batches} model calls, mean batch {report['mean_batch']}, "
        f"largest {report['largest_batch']}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
