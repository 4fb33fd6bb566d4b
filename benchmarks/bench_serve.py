"""Load test of the web API on 127.0.0.1: single-patch ``POST /api/predict`` throughput and latency.

Starts ``breastpath serve`` in a child process on a free port of 127.0.0.1 (never another host),
then drives it with 1, 8 and 32 concurrent keep-alive clients for a bounded time and number of
requests each, and prints requests/s, p50/p95/p99 latency and errors per level, plus the server's
batching statistics. The clients are a few lines of asyncio over raw sockets, so that the load
generator costs little CPU next to the server on a small machine.

    python benchmarks/bench_serve.py                          # default model, a real IDC patch
    python benchmarks/bench_serve.py --seconds 5 --clients 1 8 32 --json out.json
    python benchmarks/bench_serve.py --abuse 0.3 --max-upload-mb 1  # 30% bad or oversized
    python benchmarks/bench_serve.py --runtime onnx           # score with onnxruntime

With ``--abuse F`` a fraction F of the requests are bad: corrupt PNG data, a truncated PNG, text
named ``.png``, an empty file, a PNG whose header claims 50000 x 40000 pixels, a file one byte
over the upload limit, and a body declared over the body limit (sent with ``Expect:
100-continue`` on a fresh connection, so the 413 comes before any of it is sent). The report
then counts answers per kind and status, checks that every answer was a 2xx or a 4xx (or the
documented 503 "busy"; never another 5xx, never a dropped connection), and gives the server's
resident memory before the load, after each level and at its peak, from /proc (list a level
twice, e.g. ``--clients 1 8 32 32 32``, to see whether it levels off). The exit status is 1 when
any answer broke that rule.

Nothing here is a pass/fail test of speed (the issue's target: > 200 predictions/s on 2 CPU cores
with CancerNet, no errors); compare figures taken on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable
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


def multipart_parts(
    port: int, name: str, data: bytes, *, declared: int | None = None, expect: bool = False
) -> tuple[bytes, bytes]:
    """Head and body of a single-file ``POST /api/predict``; ``declared`` overrides the
    Content-Length (the body is then padded to it), ``expect`` adds ``Expect: 100-continue``."""
    boundary = "breastpathbench"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    if declared is not None:
        body += b"\0" * (declared - len(body))
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n"
        + ("Expect: 100-continue\r\n" if expect else "")
        + "\r\n"
    ).encode()
    return head, body


# -- bad requests for --abuse ---------------------------------------------------------------------

#: Multipart boundaries and part headers the server allows on top of the upload limit
#: (breastpath.serve.middleware.MULTIPART_OVERHEAD).
MULTIPART_OVERHEAD = 64 * 1024


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _scrambled(png: bytes) -> bytes:
    """``png`` with its compressed pixel data scrambled (chunk CRC no longer fits)."""
    data = bytearray(png)
    start = data.index(b"IDAT") + 8
    for offset in range(start, min(start + 64, len(data) - 12)):
        data[offset] ^= 0x5A
    return bytes(data)


class Request:
    """One kind of request: its bytes, and whether it needs a fresh connection of its own."""

    def __init__(self, kind: str, head: bytes, body: bytes, *, alone: bool = False) -> None:
        self.kind, self.head, self.body, self.alone = kind, head, body, alone


def abuse_requests(port: int, good: bytes, max_upload_bytes: int) -> list[Request]:
    """Malformed and oversized requests, one of each kind."""
    rng = np.random.default_rng(1)
    files = {
        "corrupt": ("corrupt.png", _scrambled(good)),
        "truncated": ("truncated.png", good[: len(good) // 2]),
        "not-image": ("notes.png", b"patient notes, not an image\n" * 8),
        "empty": ("empty.png", b""),
        "bomb": ("bomb.png", _png_claiming(50_000, 40_000)),
        "oversized-file": ("big.png", rng.bytes(max_upload_bytes + 1)),
    }
    out = [Request(kind, *multipart_parts(port, n, d)) for kind, (n, d) in files.items()]
    declared = max_upload_bytes + MULTIPART_OVERHEAD + 1
    head, body = multipart_parts(port, "huge.png", b"", declared=declared, expect=True)
    out.append(Request("oversized-body", head, body, alone=True))
    return out


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one response; status 0 if none came."""
    status_line = await reader.readline()
    if not status_line:
        return 0, {}, b""
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def send_alone(port: int, request: Request) -> int:
    """Send ``request`` on a fresh connection; the body only after ``100 Continue``."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request.head)
        status, _, _ = await read_response(reader)
        if status == 100:
            writer.write(request.body)
            status, _, _ = await read_response(reader)
        return status
    except (ConnectionError, asyncio.IncompleteReadError):
        return 0
    finally:
        writer.close()


async def client(
    port: int,
    pick: Callable[[], Request],
    deadline: float,
    budget: list[int],
    out: dict,
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            request = pick()
            if request.alone:
                out["answers"][(request.kind, await send_alone(port, request))] += 1
                continue
            started = time.perf_counter()
            writer.write(request.head + request.body)
            try:
                status, headers, body = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                status, headers, body = 0, {}, b""
            elapsed = time.perf_counter() - started
            out["answers"][(request.kind, status)] += 1
            if request.kind == "good" and status == 200 and b'"probability"' in body:
                out["latencies"].append(elapsed)
            elif request.kind == "good":
                out["errors"].append(status)
            if status == 0 or headers.get("connection", "").lower() == "close":
                writer.close()
                reader, writer = await asyncio.open_connection(HOST, port)
    finally:
        writer.close()


async def level(
    port: int, pick: Callable[[], Request], clients: int, seconds: float, cap: int
) -> dict:
    out: dict = {"latencies": [], "errors": [], "answers": Counter()}
    budget = [cap]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(client(port, pick, deadline, budget, out) for _ in range(clients)))
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
        "answers": {f"{kind} {status}": n for (kind, status), n in sorted(out["answers"].items())},
    }


def picker(good: Request, bad: list[Request], fraction: float, seed: int) -> Callable[[], Request]:
    """Draw the good request, or with probability ``fraction`` one of the bad ones."""
    rng = np.random.default_rng(seed)

    def pick() -> Request:
        if bad and rng.random() < fraction:
            return bad[int(rng.integers(len(bad)))]
        return good

    return pick


def rss_kib(pid: int) -> dict[str, int]:
    """Resident memory of a process now and at its peak, in KiB (Linux /proc; empty elsewhere)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = {"VmRSS": "rss_kib", "VmHWM": "peak_kib"}
    return {
        fields[key]: int(value.split()[0])
        for key, _, value in (line.partition(":") for line in lines)
        if key in fields
    }


def allowed(status: int) -> bool:
    """2xx, 4xx, or the documented 503 "busy"."""
    return 200 <= status < 300 or 400 <= status < 500 or status == 503


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
    if args.runtime != "torch":
        command += ["--runtime", args.runtime]
    if args.max_upload_mb:
        command += ["--max-upload-mb", str(args.max_upload_mb)]
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
    parser.add_argument("--runtime", choices=["torch", "onnx"], default="torch")
    parser.add_argument(
        "--abuse", type=float, default=0.0, help="fraction of bad or oversized requests (0..1)"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=0.0, help="server upload limit [serve's default]"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not 0.0 <= args.abuse <= 1.0:
        parser.error("--abuse is a fraction between 0 and 1")

    port = free_port()
    name, data = patch_bytes()
    good = Request("good", *multipart_parts(port, name, data))
    upload_limit = int((args.max_upload_mb or 20.0) * 2**20)
    bad = abuse_requests(port, data, upload_limit) if args.abuse else []
    server = start_server(port, args)
    try:
        asyncio.run(level(port, picker(good, [], 0.0, 0), 4, args.warmup, args.max_requests))
        memory_before = rss_kib(server.pid)
        before = get_json(port, "/api/models")["queue"]
        rows = []
        for n in args.clients:
            pick = picker(good, bad, args.abuse, len(rows))
            rows.append(asyncio.run(level(port, pick, n, args.seconds, args.max_requests)))
            rows[-1]["server_rss_kib"] = rss_kib(server.pid).get("rss_kib")
        after = get_json(port, "/api/models")["queue"]
        memory_after = rss_kib(server.pid)
        alive = get_json(port, "/api/health")["status"] == "ok"
    finally:
        server.terminate()
        server.wait(timeout=30)
    batches = after["batches"] - before["batches"]
    images = after["images"] - before["images"]
    answers: Counter[str] = Counter()
    for row in rows:
        answers.update(row["answers"])
    broken = {key: n for key, n in answers.items() if not allowed(int(key.rsplit(" ", 1)[1]))}
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}",
        "checkpoint": args.checkpoint,
        "runtime": args.runtime,
        "payload": f"{name} ({len(data)} bytes)",
        "abuse": args.abuse,
        "upload_limit_bytes": upload_limit,
        "levels": rows,
        "server_batches": batches,
        "mean_batch": round(images / batches, 2) if batches else None,
        "largest_batch": after["largest_batch"],
        "answers": dict(sorted(answers.items())),
        "not_2xx_4xx_or_503": broken,
        "server_memory_kib": {"before": memory_before, "after": memory_after},
        "healthy_after": alive,
    }
    print(
        f"{report['machine']}; runtime {args.runtime}; payload {report['payload']}; "
        f"abuse fraction {args.abuse}"
    )
    print(
        f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'RSS MiB':>8}"
    )
    for row in rows:
        rss = row["server_rss_kib"]
        cells = [row[k] for k in ("requests_per_s", "p50_ms", "p95_ms", "p99_ms")]
        cells.append(None if rss is None else round(rss / 1024))
        print(
            f"{row['clients']:>7} {row['requests']:>8} {row['errors']:>6} "
            + " ".join(f"{'-' if cell is None else cell:>8}" for cell in cells)
        )
    print(
        f"server: {batches} model calls, mean batch {report['mean_batch']}, "
        f"largest {report['largest_batch']}"
    )
    if args.abuse:
        print("answers (kind status: count), all levels:")
        for key, count in sorted(answers.items()):
            print(f"  {key:<24} {count:>7}")
        print(
            f"server RSS: {memory_before.get('rss_kib')} KiB before, "
            f"{memory_after.get('rss_kib')} KiB after (peak {memory_after.get('peak_kib')} KiB); "
            f"health after: {'ok' if alive else 'FAILED'}"
        )
        print(f"answers other than 2xx/4xx/503: {broken or 'none'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 1 if broken or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
