"""The decode worker: a child process that decodes images under hard resource limits.

:class:`~breastpath.sandbox.pool.DecodeSandbox` starts it as
``python -c "from breastpath.sandbox.worker import main; main()" MEMORY_BYTES``. It caps its own
address space (``RLIMIT_AS``) once, and before each image sets its CPU-time limit
(``RLIMIT_CPU``) to what it has used so far plus the per-image allowance, so an image that spins
the decoder gets the process killed by ``SIGXCPU`` (the parent then starts a fresh worker).

Wire format (integers big-endian). The worker reads a whole call before answering, so the parent
can write it all and then read, without both ends blocking on full pipes::

    call   = max_pixels:u64 cpu_seconds:u32 count:u32, then count x item
    item   = kind:1 byte (b"B" the file's bytes, b"P" a path) length:u64 payload
    answer = b"K" height:u32 width:u32 frames:u32 format:8 bytes, then height*width*3 bytes
           | b"E" kind:1 byte (b"I" bad image, b"M" memory limit) length:u32 UTF-8 message

On start the worker writes b"R" once its imports are done. Nothing it sends is unpickled.
"""

from __future__ import annotations

import os
import resource
import struct
import sys
from typing import BinaryIO

import numpy as np

CALL = struct.Struct(">QII")
ITEM = struct.Struct(">cQ")
PIXELS = struct.Struct(">III8s")
ERROR = struct.Struct(">cI")
READY = b"R"
MAX_MESSAGE = 1000


def read_exact(stream: BinaryIO, size: int) -> bytes | None:
    """``size`` bytes from ``stream``, or ``None`` at its end."""
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def encode_call(sources: list[bytes | str], *, max_pixels: int, cpu_seconds: int) -> bytes:
    """One call's bytes: the limits, then each source (bytes, or a path as ``str``).

    Examples
    --------
    >>> len(encode_call([b"abc"], max_pixels=10, cpu_seconds=1))
    28
    """
    parts = [CALL.pack(max_pixels, cpu_seconds, len(sources))]
    for source in sources:
        kind, payload = (b"B", source) if isinstance(source, bytes) else (b"P", os.fsencode(source))
        parts += [ITEM.pack(kind, len(payload)), payload]
    return b"".join(parts)


def _read_call(stream: BinaryIO) -> tuple[int, int, list[bytes | str]] | None:
    head = read_exact(stream, CALL.size)
    if head is None:
        return None
    max_pixels, cpu_seconds, count = CALL.unpack(head)
    sources: list[bytes | str] = []
    for _ in range(count):
        item = read_exact(stream, ITEM.size)
        if item is None:
            return None
        kind, length = ITEM.unpack(item)
        payload = read_exact(stream, length) if length else b""
        if payload is None:
            return None
        sources.append(payload if kind == b"B" else os.fsdecode(payload))
    return max_pixels, cpu_seconds, sources


def _limit_cpu(seconds: int) -> None:
    """Let this process use ``seconds`` more of CPU time (then ``SIGXCPU`` ends it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + seconds if hard == resource.RLIM_INFINITY else min(used + seconds, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _error(out: BinaryIO, kind: bytes, message: str) -> None:
    data = message.encode("utf-8", "replace")[:MAX_MESSAGE]
    out.write(b"E" + ERROR.pack(kind, len(data)) + data)


def _answer(out: BinaryIO, source: bytes | str, max_pixels: int) -> None:
    from breastpath.errors import DecodeLimitError, InvalidImageError
    from breastpath.imaging import decode_image_info, describe_source

    try:
        decoded = decode_image_info(source, max_pixels=max_pixels)
    except DecodeLimitError as exc:
        _error(out, b"M", str(exc))
        return
    except InvalidImageError as exc:
        _error(out, b"I", str(exc))
        return
    except MemoryError:
        _error(out, b"M", f"{describe_source(source)}: not enough memory to decode this image")
        return
    except Exception as exc:  # whatever the decoder raises is a bad image
        _error(out, b"I", f"{describe_source(source)}: corrupt or unsupported image ({exc!r})")
        return
    height, width = decoded.pixels.shape[:2]
    fmt = decoded.format.encode("ascii", "replace")[:8]
    out.write(b"K" + PIXELS.pack(height, width, decoded.frames, fmt))
    out.write(memoryview(np.ascontiguousarray(decoded.pixels).data).cast("B"))


def _warm() -> None:
    """Import the decoders now, before the limits apply and before the first image."""
    from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

    from breastpath import imaging  # noqa: F401

    del BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin
    Image.init()


def main() -> None:
    """Serve calls on stdin until it closes."""
    out, stream = sys.stdout.buffer, sys.stdin.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    memory = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    _warm()
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    out.write(READY)
    out.flush()
    while True:
        call = _read_call(stream)
        if call is None:
            return
        max_pixels, cpu_seconds, sources = call
        for source in sources:
            _limit_cpu(cpu_seconds)
            _answer(out, source, max_pixels)
            out.flush()
        del call, sources  # the payloads are not kept while idle
