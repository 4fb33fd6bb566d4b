"""Issue 29's attacks on decoding, for ``bench_abuse.py``: files cheap to send but malformed or
expensive to open, hang-ups during big decodes, zips with huge directories or oversize members.

Each attack is ``(build, fire)`` as in ``bench_abuse.ATTACKS``; ``fire`` records answers into
the bench's ``Outcome``. Imported by ``bench_abuse.py`` (same folder).
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zipfile
import zlib

import numpy as np
from PIL import Image

MIB = 1 << 20


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zeros_png(width: int, height: int, *, text_chunks: int = 0) -> bytes:
    rows = (b"\0" * (width + 1)) * height
    text = _chunk(b"zTXt", b"k\0\0" + zlib.compress(b"x" * 1000)) * text_chunks
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + text
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _tiff_strips(count: int) -> bytes:
    data = bytearray(_encode(Image.new("L", (1, 1)), "TIFF"))
    (first,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, first)
    for entry in range(first + 2, first + 2 + 12 * entries, 12):
        if struct.unpack_from("<H", data, entry)[0] in (273, 279):
            struct.pack_into("<I", data, entry + 4, count)
    return bytes(data) + b"\0" * (8 * count)  # the strip tables, as sent in the issue


def _tiff_pages(pages: int) -> bytes:
    one = Image.new("RGB", (1, 1), (200, 120, 160))
    return _encode(one, "TIFF", save_all=True, append_images=[one] * (pages - 1))


def _jpeg_comments(count: int) -> bytes:
    data = _encode(Image.new("RGB", (16, 16), (200, 120, 160)), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x03x" * count + data[2:]


def _jpeg_scans(side: int, repeats: int) -> bytes:
    data = _encode(Image.new("RGB", (side, side), (200, 120, 160)), "JPEG", progressive=True)
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + data[-2:]


def _fuzzed_tiff(seed: int) -> bytes:
    page = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    data = bytearray(_encode(page, "TIFF", save_all=True, append_images=[page]))
    rng = np.random.default_rng(seed)
    for _ in range(rng.integers(1, 4)):
        data[rng.integers(0, len(data))] = rng.integers(0, 256)
    return bytes(data)


def build_slow_to_open():
    """The issue's slow-to-open files (sizes cut where the refusal does not depend on them)."""
    return [
        ("png-19000-text-chunks.png", zeros_png(50, 50, text_chunks=19_000)),
        ("tiff-2M-strips.tif", _tiff_strips(2_000_000)),
        ("tiff-5000-pages.tif", _tiff_pages(5_000)),
        ("jpeg-3.5M-comments.jpg", _jpeg_comments(3_500_000)),
        ("jpeg-8192-1000-scans.jpg", _jpeg_scans(8192, 1000)),
    ]


def build_malformed():
    """200 fuzzed 2-page TIFFs (seeds 0-199; 31, 37, 43 and 85 raised TypeError/KeyError)."""
    return [(f"fuzz{seed}.tif", _fuzzed_tiff(seed)) for seed in range(200)]


def build_zip_directory():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for i in range(60_000):
            bundle.writestr(f"d/{i}", b"")
    return buffer.getvalue()


def build_oversize_members():
    """64 members of 200 MiB zeros (deflate), each declared at its real size."""
    buffer = io.BytesIO()
    block = b"\0" * MIB
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for i in range(64):
            with bundle.open(f"m{i}.png", "w", force_zip64=True) as member:
                for _ in range(200):
                    member.write(block)
    return buffer.getvalue()


def make_fires(multipart, post, record, host: str):
    """The ``fire`` functions, bound to the bench's request helpers."""

    def fire_singles(port, out, files) -> None:
        for name, data in files:
            status, body, seconds = post(port, "/api/predict", [("file", name, data)])
            record(out, status, body)
            out.notes.append(f"{name} ({len(data) / MIB:.1f} MiB): {status} in {seconds:.2f} s")

    def fire_malformed(port, out, files) -> None:
        for name, data in files:
            status, body, _ = post(port, "/api/predict", [("file", name, data)])
            record(out, status, body)
        good = ("files", "good.png", zeros_png(50, 50))
        parts = [good] + [("files", n, d) for n, d in files[:63]]
        status, body, _ = post(port, "/api/predict/batch", parts)
        record(out, status, body, batch=True)

    def fire_zip(port, out, archive) -> None:
        status, body, seconds = post(port, "/api/predict/batch", [("files", "z.zip", archive)])
        record(out, status, body, batch=True)
        out.notes.append(f"body {len(archive) / MIB:.1f} MiB, answered in {seconds:.2f} s")

    def fire_hang_ups(port, out, image) -> None:
        """8 clients for 20 s each send an 8000 x 8000 PNG and hang up after 0.3 s; one polite
        client sends patches meanwhile."""
        stop = time.monotonic() + 20
        body, kind = multipart([("file", "big.png", image)])
        head = (
            f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sent = [0]
        polite: list[float] = []

        def rude() -> None:
            while time.monotonic() < stop:
                with socket.create_connection((host, port)) as conn:
                    conn.sendall(head + body)
                    time.sleep(0.3)
                sent[0] += 1

        def nice() -> None:
            patch = zeros_png(50, 50)
            while time.monotonic() < stop:
                status, answer, seconds = post(port, "/api/predict", [("file", "p.png", patch)])
                record(out, status, answer)
                polite.append(seconds)

        threads = [threading.Thread(target=rude) for _ in range(8)]
        threads.append(threading.Thread(target=nice))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        out.statuses["hung up"] += sent[0]
        if polite:
            out.notes.append(
                f"polite patches meanwhile: {len(polite)}, p50 {np.percentile(polite, 50):.2f} s,"
                f" max {max(polite):.2f} s"
            )

    return fire_singles, fire_malformed, fire_zip, fire_hang_ups
