"""The serve attack suite, heavy cases, against a real ``breastpath serve`` on 127.0.0.1.

Starts ``breastpath serve --port 0`` (the system picks a free port; the server prints it) in a
child process with the default limits, then runs each attack in turn and reports, per attack:
the answers by status, whether the server is still alive (``GET /api/health``), its resident
memory before and after (and the peak so far, ``VmHWM`` from /proc), and the worst event-loop
stall, measured by a heartbeat probe that sends ``GET /api/health`` (answered on the event loop
itself) every 20 ms on its own keep-alive connection during the whole run. The fairness check
sends the heaviest batch the limits allow from one client while 8 well-behaved clients each send
single-patch requests back to back, and reports their p50/p99 latency.

    python benchmarks/bench_abuse.py                     # the whole suite, a table at the end
    python benchmarks/bench_abuse.py --only thin zip-bomb-bzip2 --json out.json

The server runs with ``--body-timeout 10`` (default 120 s) so the slow-body attack ends within
the run; every other limit is the default. Exit status 1 when any answer was a 5xx (other than
the documented 503 busy) or the server died. Figures depend on the machine: quote them with it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from abuse_decode import (
    build_malformed,
    build_oversize_members,
    build_slow_to_open,
    build_zip_directory,
    make_fires,
    zeros_png,
)

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


# -- requests ----------------------------------------------------------------------------------


def multipart(files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """Body and content type of a multipart form with ``(field, filename, data)`` parts."""
    boundary = "breastpathabuse"
    out = io.BytesIO()
    for name, filename, data in files:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        )
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def post(port: int, path: str, files, *, timeout: float = 300) -> tuple[int, bytes, float]:
    """Status, body and seconds of one multipart POST on a fresh connection."""
    body, kind = multipart(files)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": kind})
        response = conn.getresponse()
        return response.status, response.read(), time.perf_counter() - started
    except (OSError, http.client.HTTPException) as exc:
        return -1, str(exc).encode(), time.perf_counter() - started
    finally:
        conn.close()


def get(port: int, path: str, *, method: str = "GET", timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return -1, str(exc).encode()
    finally:
        conn.close()


# -- payloads ----------------------------------------------------------------------------------


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def thin_png(width: int) -> bytes:
    """A grey 1-row PNG of ``width`` zeros (a few hundred bytes per megapixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return len(data).to_bytes(4, "big") + kind + data + crc.to_bytes(4, "big")

    header = width.to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    idat = zlib.compress(b"\0" * (width + 1), 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def tissue_like(side: int, seed: int) -> bytes:
    """An H&E-coloured PNG of ``side x side`` (pink with purple nuclei), compressible."""
    rng = np.random.default_rng(seed)
    small = rng.random((side // 16 + 1, side // 16 + 1)) < 0.3
    mask = np.kron(small, np.ones((16, 16), bool))[:side, :side]
    image = np.empty((side, side, 3), np.uint8)
    image[:] = (225, 160, 200)
    image[mask] = (150, 90, 170)
    return png(image)


def zip_of(members: list[tuple[str, bytes]], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as bundle:
        for name, data in members:
            bundle.writestr(name, data)
    return buffer.getvalue()


def zeros_zip(name: str, size: int, *, method: int, count: int = 1) -> bytes:
    """A zip of ``count`` members of ``size`` zero bytes each, written in 1 MiB steps."""
    buffer = io.BytesIO()
    block = b"\0" * MIB
    with zipfile.ZipFile(buffer, "w", compression=method) as bundle:
        for index in range(count):
            with bundle.open(f"{index}-{name}", "w", force_zip64=True) as member:
                for _ in range(size // MIB):
                    member.write(block)
    return buffer.getvalue()


def encrypted(archive: bytes) -> bytes:
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            data[found + offset] |= 0x1
            start = found + 4
    return bytes(data)


# -- the server and its probes -----------------------------------------------------------------


def start_server(extra: list[str]) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "breastpath", "serve", "--port", "0", "--no-access-log"]
    server = subprocess.Popen(
        [*command, "--body-timeout", "10", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    assert server.stdout is not None
    for line in server.stdout:
        found = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if found:
            port = int(found.group(1))
            break
    else:
        raise SystemExit(f"the server did not start (exit {server.wait()})")
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    for _ in range(300):
        if get(port, "/api/health")[0] == 200:
            return server, port
        time.sleep(0.1)
    raise SystemExit("the server did not answer /api/health")


def memory(pid: int) -> dict[str, float]:
    """Resident memory and its peak (MiB) from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _is_worker(pid: int) -> bool:
    """Whether ``pid`` runs a decode worker: a child between its fork and its exec still runs
    the server's program, and its VmRSS is the server's own (shared, copy-on-write) pages."""
    return b"breastpath.sandbox.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()


def tree_rss(pid: int) -> tuple[float, float]:
    """Resident memory (MiB) of the server plus its decode workers, and the same plus every
    child as /proc shows it (a child caught between fork and exec counts the server twice)."""
    server = memory(pid).get("VmRSS", 0.0)
    workers = children = 0.0
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in listing.read_text().split():
            with contextlib.suppress(OSError):  # a worker that just ended
                rss = memory(int(child)).get("VmRSS", 0.0)
                children += rss
                workers += rss if _is_worker(int(child)) else 0.0
    return server + workers, server + children


class TreeSampler:
    """The largest :func:`tree_rss` seen (both figures), sampled every 50 ms, per window."""

    def __init__(self, pid: int) -> None:
        self.pid, self.window = pid, "start"
        self.peaks: dict[str, float] = {}
        self.raw_peaks: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                rss, raw = tree_rss(self.pid)
            except OSError:
                return
            self.peaks[self.window] = max(self.peaks.get(self.window, 0.0), rss)
            self.raw_peaks[self.window] = max(self.raw_peaks.get(self.window, 0.0), raw)


def _beat(port: int, interval: float, stop, samples) -> None:
    """The heartbeat loop (in its own process, so the bench's own work cannot delay it)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    out = []
    while not stop.is_set():
        sent = time.time()
        try:
            conn.request("GET", "/api/health")
            conn.getresponse().read()
            out.append((sent, time.time() - sent))
        except (OSError, http.client.HTTPException):
            out.append((sent, float("inf")))
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=30)
        stop.wait(interval)
    conn.close()
    samples.send(out)


class Heartbeat:
    """``GET /api/health`` every ``interval`` s on one keep-alive connection, from a separate
    process; the latencies come back when it stops."""

    def __init__(self, port: int, interval: float = 0.02) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.stop_event = context.Event()
        self._receiver, sender = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_beat, args=(port, interval, self.stop_event, sender), daemon=True
        )
        self.samples: list[tuple[float, float]] = []

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._receiver.poll(30):
            self.samples = self._receiver.recv()
        self.process.join(10)

    @property
    def failures(self) -> int:
        return sum(1 for _, lat in self.samples if lat == float("inf"))

    def worst(self, since: float, until: float) -> float:
        inside = [lat for sent, lat in self.samples if since <= sent <= until]
        return max(inside, default=float("nan"))


@dataclass
class Outcome:
    name: str
    statuses: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    alive: bool = True
    rss_before: float = 0.0
    rss_after: float = 0.0
    peak: float = 0.0
    stall_ms: float = 0.0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def row(self) -> str:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"| {self.name} | {answers} | {'yes' if self.alive else 'NO'} | "
            f"{self.rss_before:.0f} -> {self.rss_after:.0f} | {self.peak:.0f} | "
            f"{self.stall_ms:.0f} | {self.seconds:.1f} | {'; '.join(self.notes)} |"
        )


def item_statuses(body: bytes) -> Counter:
    """Per-file statuses of a batch answer (``200`` for a scored file)."""
    try:
        results = json.loads(body)["results"]
    except (ValueError, KeyError, TypeError):
        return Counter()
    return Counter(str(r["error"]["status"]) if not r["ok"] else "200" for r in results)


# -- the attacks ---------------------------------------------------------------------------------
# Each attack is (build, fire): ``build()`` makes its payload before the clock starts (so the
# bench's own work is not measured), ``fire(port, out, payload)`` sends it.

PATCH = tissue_like(50, 0)


def _record(out: Outcome, status: int, body: bytes, *, batch: bool = False) -> None:
    out.statuses[f"HTTP {status}"] += 1
    if batch and status == 200:
        for key, count in item_statuses(body).items():
            out.statuses[f"item {key}"] += count


def build_thin():
    return [(f"thin{w}.png", thin_png(w)) for w in (60_000_000, 1_000_000, 100_000)]


def fire_thin(port: int, out: Outcome, images) -> None:
    """1 x 60,000,000, 1 x 1,000,000 and 1 x 100,000 px PNGs, alone and in a batch."""
    for name, data in images:
        _record(out, *post(port, "/api/predict", [("file", name, data)])[:2])
    status, body, _ = post(port, "/api/predict/batch", [("files", n, d) for n, d in images])
    _record(out, status, body, batch=True)
    out.notes.append(f"largest file {max(len(d) for _, d in images) // 1024} KiB")


def build_encrypted():
    return encrypted(zip_of([("secret.png", PATCH), ("also.png", PATCH)]))


def fire_batch(port: int, out: Outcome, files) -> None:
    status, body, seconds = post(port, "/api/predict/batch", files)
    _record(out, status, body, batch=True)
    size = sum(len(data) for _, _, data in files)
    out.notes.append(f"body {size / 1024:.1f} KiB, answered in {seconds:.2f} s")


def bomb(method: int, size: int):
    return lambda: [("files", "bomb.zip", zeros_zip("bomb.png", size, method=method))]


def build_big_images():
    """64 PNGs of 8000 x 8000 in one small zip (12 GB decoded if all were held)."""
    big = png(np.zeros((8000, 8000, 3), np.uint8))
    return [("files", "big.zip", zip_of([(f"big{i}.png", big) for i in range(64)]))]


def build_many_zips(count: int):
    """``count`` zips of 5 x 20 MiB zeros each (1.2 GB for 12 if the budget were per zip)."""
    one = zeros_zip("z.png", 20 * MIB, method=zipfile.ZIP_DEFLATED, count=5)
    return lambda: [("files", f"z{i}.zip", one) for i in range(count)]


def build_heavy():
    """The heaviest batch the default limits allow: 64 tissue-like 1600 x 1600 images."""
    image = tissue_like(1600, 1)
    return [("files", "heavy.zip", zip_of([(f"h{i}.png", image) for i in range(64)]))]


def fire_fairness(port: int, out: Outcome, heavy) -> None:
    """One client sends the heaviest batch; 8 others send single patches back to back."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    done = threading.Event()

    def polite() -> None:
        while not done.is_set():
            status, _, seconds = post(port, "/api/predict", [("file", "p.png", PATCH)])
            statuses[f"polite {status}"] += 1
            latencies.append(seconds)

    clients = [threading.Thread(target=polite) for _ in range(8)]
    for thread in clients:
        thread.start()
    time.sleep(1.0)
    status, body, seconds = post(port, "/api/predict/batch", heavy)
    done.set()
    for thread in clients:
        thread.join()
    _record(out, status, body, batch=True)
    out.statuses.update(statuses)
    results = json.loads(body)["results"] if status == 200 else []
    tiles = sum((r.get("tiles") or {}).get("count", 0) for r in results)
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    out.notes.append(
        f"heavy batch {seconds:.1f} s, {tiles} tiles; 8 polite clients meanwhile: "
        f"{len(latencies)} requests, p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    out.extra = {"p50_ms": p50, "p99_ms": p99, "requests": len(latencies)}


def fire_client_gone(port: int, out: Outcome, heavy) -> None:
    """Send the heaviest batch and hang up after 3 s: its remaining model work is dropped."""
    body, kind = multipart(heavy)
    conn = socket.create_connection((HOST, port))
    head = (
        f"POST /api/predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    conn.sendall(head.encode() + body)
    time.sleep(3.0)
    conn.close()
    time.sleep(0.5)
    before = json.loads(get(port, "/api/models")[1])["queue"]
    time.sleep(3.0)
    after = json.loads(get(port, "/api/models")[1])["queue"]
    out.statuses["hung up"] += 1
    out.notes.append(
        f"model rows scored in the 3 s after the hang-up: {after['images'] - before['images']}; "
        f"rows dropped: {after['dropped_rows']}"
    )


def fire_slow_clients(port: int, out: Outcome, _payload) -> None:
    """20 connections that send nothing, 20 that drip header bytes, 10 that drip a body."""
    conns = [socket.create_connection((HOST, port)) for _ in range(50)]
    for conn in conns[40:]:
        conn.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n--zz\r\n"
        )
    for conn in conns:
        conn.setblocking(False)
    started = time.monotonic()
    closed: dict[int, float] = {}
    while time.monotonic() - started < 25 and len(closed) < len(conns):
        for index, conn in enumerate(conns):
            if index in closed:
                continue
            try:
                conn.send(b"X" if 20 <= index < 40 else b"x" if index >= 40 else b"")
                data = conn.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                closed[index] = time.monotonic() - started
                continue
            if data.startswith(b"HTTP/1.1 408"):
                out.statuses["HTTP 408"] += 1
            if not data or data.startswith(b"HTTP/1.1 408"):
                closed[index] = time.monotonic() - started
        time.sleep(0.5)
    for conn in conns:
        conn.close()
    out.statuses["closed by the server"] = len(closed)
    out.notes.append(
        f"{len(closed)} of {len(conns)} closed, the last after "
        f"{max(closed.values(), default=0):.1f} s "
        "(header timeout 10 s, body timeout 10 s)"
    )


def build_members():
    names = ("../up.png", "/abs.png", ".hidden.png", "d/.x.png", "ok.png")
    return [("files", "m.zip", zip_of([(n, PATCH) for n in names]))]


def build_formats():
    from PIL import Image

    rgb = Image.new("RGB", (50, 50), (200, 90, 160))
    files = []
    for fmt in ("GIF", "WEBP", "PPM", "ICO", "TGA", "PCX"):
        buffer = io.BytesIO()
        rgb.save(buffer, format=fmt)
        files.append((f"x.{fmt.lower()}", buffer.getvalue()))
    files.append(("x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 50 50\nshowpage\n"))
    buffer = io.BytesIO()
    rgb.save(buffer, format="TIFF", save_all=True, append_images=[Image.new("RGB", (50, 50))])
    files.append(("stack.tif", buffer.getvalue()))
    return files


def fire_formats(port: int, out: Outcome, files) -> None:
    for name, data in files:
        status, body, _ = post(port, "/api/predict", [("file", name, data)])
        _record(out, status, body)
    out.notes.append(f"multi-page TIFF: {json.loads(body).get('note')!r}")


def fire_minor(port: int, out: Outcome, _payload) -> None:
    field = b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n'
    payload = field + b"y" * MIB + b"\r\n--b--\r\n"
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    kind = "multipart/form-data; boundary=b"
    conn.request("POST", "/api/predict", body=payload, headers={"Content-Type": kind})
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    out.statuses[f"HTTP {response.status}"] += 1
    out.notes.append(f"422 body {len(answer)} B for a 1 MiB field")
    status, answer, _ = post(port, "/api/predict", [("file", "a\u202egnp.exe.png", PATCH)])
    _record(out, status, answer)
    out.notes.append(f"name echoed as {json.loads(answer).get('filename')!r}")
    out.notes.append(
        f"/docs {get(port, '/docs')[0]}, /openapi.json {get(port, '/openapi.json')[0]}"
    )
    out.notes.append(f"HEAD /api/health {get(port, '/api/health', method='HEAD')[0]}")


def _nothing():
    return None


_singles, _malformed, _zip, _hang_ups = make_fires(multipart, post, _record, HOST)


ATTACKS: dict[str, tuple[Callable[[], object], Callable[[int, Outcome, object], None]]] = {
    "thin": (build_thin, fire_thin),
    "encrypted-member": (lambda: [("files", "locked.zip", build_encrypted())], fire_batch),
    "zip-bomb-bzip2": (bomb(zipfile.ZIP_BZIP2, 1024 * MIB), fire_batch),
    "zip-bomb-lzma": (bomb(zipfile.ZIP_LZMA, 256 * MIB), fire_batch),
    "zip-bomb-deflate": (bomb(zipfile.ZIP_DEFLATED, 1024 * MIB), fire_batch),
    "64x8000px-in-a-zip": (build_big_images, fire_batch),
    "12-zips-of-100MiB": (lambda: build_many_zips(12)(), fire_batch),
    "64-zips-of-100MiB": (lambda: build_many_zips(64)(), fire_batch),
    "hog+fairness": (build_heavy, fire_fairness),
    "client-gone": (build_heavy, fire_client_gone),
    "slow-clients": (_nothing, fire_slow_clients),
    "unsafe-members": (build_members, fire_batch),
    "formats": (build_formats, fire_formats),
    "minor": (_nothing, fire_minor),
    # issue 29: decoding attacks (benchmarks/abuse_decode.py)
    "slow-to-open": (build_slow_to_open, _singles),
    "malformed": (build_malformed, _malformed),
    "zip-60000-entries": (build_zip_directory, _zip),
    "oversize-members": (build_oversize_members, _zip),
    "hang-ups": (lambda: zeros_png(8000, 8000), _hang_ups),
}


def run(names: list[str], extra: list[str]) -> tuple[list[Outcome], dict]:
    payloads = {name: ATTACKS[name][0]() for name in names}  # before the server and the clock
    server, port = start_server(extra)
    beat = Heartbeat(port)
    beat.start()
    outcomes: list[tuple[Outcome, float, float]] = []
    try:
        time.sleep(2.0)
        baseline = memory(server.pid)
        sampler = TreeSampler(server.pid)
        for name in names:
            sampler.window = name
            out = Outcome(name, rss_before=memory(server.pid)["VmRSS"])
            started, wall = time.perf_counter(), time.time()
            try:
                ATTACKS[name][1](port, out, payloads.pop(name))
            except Exception as exc:  # a failed attack is reported, not fatal
                out.notes.append(f"attack failed: {type(exc).__name__}: {exc}")
            out.seconds = time.perf_counter() - started
            time.sleep(0.5)
            out.alive = server.poll() is None and get(port, "/api/health")[0] == 200
            if out.alive:
                mem = memory(server.pid)
                out.rss_after, out.peak = mem["VmRSS"], mem["VmHWM"]
            out.extra["tree_peak_mib"] = round(sampler.peaks.get(name, 0.0))
            out.extra["tree_peak_any_child_mib"] = round(sampler.raw_peaks.get(name, 0.0))
            out.notes.append(
                f"server + decode workers peak {out.extra['tree_peak_mib']} MiB "
                f"({out.extra['tree_peak_any_child_mib']} MiB counting children not yet exec'd)"
            )
            outcomes.append((out, wall, time.time()))
            print(f"{name}: done in {out.seconds:.1f} s", file=sys.stderr, flush=True)
            if not out.alive:
                break
        peak = memory(server.pid)["VmHWM"] if server.poll() is None else None
        sampler.stop.set()
    finally:
        beat.stop()
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    for out, since, until in outcomes:
        out.stall_ms = beat.worst(since, until) * 1000
    latencies = [lat for _, lat in beat.samples]
    summary = {
        "baseline_rss_mib": round(baseline["VmRSS"]),
        "peak_rss_mib": None if peak is None else round(peak),
        "peak_rss_with_workers_mib": round(max(sampler.peaks.values(), default=0.0)),
        "peak_rss_with_any_child_mib": round(max(sampler.raw_peaks.values(), default=0.0)),
        "heartbeats": len(latencies),
        "heartbeat_failures": beat.failures,
        "heartbeat_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
        "worst_stall_ms": round(max(latencies, default=0) * 1000, 1),
    }
    return [o for o, _, _ in outcomes], summary


def _server_error(statuses: Counter) -> bool:
    codes = [int(k.split()[-1]) for k in statuses if k.split()[-1].lstrip("-").isdigit()]
    return any((code >= 500 and code != 503) or code < 0 for code in codes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--server-arg", action="append", default=[], help="extra serve option")
    args = parser.parse_args(argv)
    outcomes, summary = run(args.only, args.server_arg)
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}\n")
    print(
        "| attack | answers | alive | RSS MiB before -> after | peak MiB | stall ms | s | notes |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for out in outcomes:
        print(out.row())
    print(json.dumps(summary, indent=1))
    bad = [o.name for o in outcomes if not o.alive or _server_error(o.statuses)]
    if args.json:
        rows = [{**o.__dict__, "statuses": dict(o.statuses)} for o in outcomes]
        report = {"attacks": rows, "summary": summary}
        args.json.write_text(json.dumps(report, indent=1, default=str))
    if bad:
        print(f"FAILED: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
