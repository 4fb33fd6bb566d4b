"""Decode untrusted images in worker processes with hard limits on memory, CPU and wall time.

:class:`DecodeSandbox` keeps a few worker processes (:mod:`breastpath.sandbox.worker`) and hands
each many images per call. A worker is capped at a memory size (``RLIMIT_AS``) and a CPU time per
image (``RLIMIT_CPU``); the parent waits for each image at most ``wall_seconds``. A worker that
passes a limit, crashes, or whose caller cancels the work is killed, its image gets a
:class:`~breastpath.errors.DecodeLimitError` (an :class:`~breastpath.errors.InvalidImageError`)
naming the limit, the rest of the call goes to a fresh worker, and nothing else is affected.

Small files of the common formats are decoded in the calling process (the *inline path*): at
most :data:`INLINE_BYTES` bytes, a PNG, JPEG or BMP of one frame whose header
(:func:`~breastpath.image_header.inspect_image`) says at most :data:`INLINE_PIXELS` pixels and
at most :data:`INLINE_METADATA_BYTES` of text/metadata. Their decoding work is bounded by those
numbers (a 50 x 50 patch takes well under a millisecond, less than a round trip to a worker),
and any exception they raise is still an ``InvalidImageError``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

from breastpath.errors import InvalidImageError
from breastpath.image_header import inspect_image
from breastpath.imaging import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageSource,
    decode_image_info,
    describe_source,
    read_source,
)
from breastpath.sandbox.process import WorkerProcess

#: The inline path (see the module docstring).
INLINE_BYTES = 64 * 1024
INLINE_PIXELS = 128 * 128
INLINE_METADATA_BYTES = 4096
INLINE_FORMATS = frozenset({"PNG", "JPEG", "BMP"})
#: Address space of a worker: this much for the interpreter and the decoders, plus
#: :data:`BYTES_PER_PIXEL` per pixel of the largest image it may decode.
BASE_MEMORY = 256 << 20
BYTES_PER_PIXEL = 16

Result = DecodedImage | InvalidImageError


def inline_bytes(data: bytes) -> bool:
    """Whether ``data`` may be decoded in the calling process (see the module docstring).

    A structure the header check refuses is inline too: it is refused without decoding.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (50, 50)).save(buffer, format="PNG")
    >>> inline_bytes(buffer.getvalue()), inline_bytes(b"not an image")
    (True, False)
    """
    if len(data) > INLINE_BYTES:
        return False
    try:
        header = inspect_image(data)
    except InvalidImageError:
        return True
    return (
        header is not None
        and header.format in INLINE_FORMATS
        and header.frames == 1
        and header.pixels <= INLINE_PIXELS
        and header.metadata_bytes <= INLINE_METADATA_BYTES
    )


def _small_file(source: ImageSource) -> bytes | None:
    """The bytes of ``source`` when it is small enough to be inline, else ``None``; a file
    that cannot be read raises :class:`~breastpath.errors.InvalidImageError` saying why."""
    if isinstance(source, bytes):
        return source
    if not isinstance(source, (str, os.PathLike)):
        return None
    try:
        large = Path(source).stat().st_size > INLINE_BYTES
    except OSError:
        large = False  # read_source names the problem
    return None if large else read_source(source, describe_source(source))


class DecodeSandbox:
    """A pool of decode workers with hard limits (see the module docstring).

    Parameters
    ----------
    workers
        Worker processes (started when first needed, replaced when killed).
    max_pixels
        Largest image decoded (refused from its header otherwise); sets the memory limit.
    cpu_seconds
        CPU time one image may take in a worker.
    wall_seconds
        Wall time the parent waits for one image.
    memory_bytes
        Address-space limit of a worker (default: :data:`BASE_MEMORY` plus
        :data:`BYTES_PER_PIXEL` per pixel of ``max_pixels``).

    Examples
    --------
    >>> with DecodeSandbox(workers=1) as sandbox:  # doctest: +SKIP
    ...     results = sandbox.decode_many(["a.png", "b.tif"])
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        cpu_seconds: int = 10,
        wall_seconds: float = 30.0,
        memory_bytes: int | None = None,
    ) -> None:
        if workers < 1 or max_pixels < 1 or cpu_seconds < 1 or not wall_seconds > 0:
            raise ValueError("workers, max_pixels, cpu_seconds and wall_seconds must be positive")
        self.max_pixels = int(max_pixels)
        self.cpu_seconds = int(cpu_seconds)
        self.wall_seconds = float(wall_seconds)
        self.memory_bytes = int(memory_bytes or BASE_MEMORY + BYTES_PER_PIXEL * max_pixels)
        self._slots: queue.LifoQueue[WorkerProcess | None] = queue.LifoQueue()
        for _ in range(workers):
            self._slots.put(None)  # a slot whose worker is not started yet
        self.stats = {"inline": 0, "in_workers": 0, "killed": 0, "started": 0}

    def __enter__(self) -> DecodeSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the idle workers now (a later call starts fresh ones; a busy worker goes back
        to its slot and ends with this process, which closes its input)."""
        idle: list[WorkerProcess | None] = []
        while True:
            try:
                idle.append(self._slots.get_nowait())
            except queue.Empty:
                break
        for worker in idle:
            if worker is not None:
                worker.kill()
            self._slots.put(None)

    # ------------------------------------------------------------------ decoding
    def decode(self, source: ImageSource, *, cancel: threading.Event | None = None) -> DecodedImage:
        """Decode one image; raises :class:`~breastpath.errors.InvalidImageError` (or its
        :class:`~breastpath.errors.DecodeLimitError`) for any failure."""
        result = self.decode_many([source], cancel=cancel)[0]
        if isinstance(result, InvalidImageError):
            raise result
        return result

    def decode_many(
        self, sources: Sequence[ImageSource], *, cancel: threading.Event | None = None
    ) -> list[Result]:
        """Decode many images, in order; each failure is an ``InvalidImageError`` in its place.

        Small files are decoded inline; the others go to one worker in one call. ``cancel``
        set by another thread stops the worker (its images get an error) and returns.
        """
        results: list[Result | None] = [None] * len(sources)
        pending: list[int] = []
        for index, source in enumerate(sources):
            try:
                data = _small_file(source)
            except InvalidImageError as exc:
                results[index] = exc
                continue
            if data is not None and inline_bytes(data):
                results[index] = self._inline(data, describe_source(source))
            else:
                pending.append(index)
        if pending:
            decoded = self._in_workers([sources[i] for i in pending], cancel=cancel)
            for index, result in zip(pending, decoded, strict=True):
                results[index] = result
        return [r for r in results if r is not None]

    def _inline(self, data: bytes, name: str) -> Result:
        self.stats["inline"] += 1
        try:
            return decode_image_info(data, max_pixels=self.max_pixels, name=name)
        except InvalidImageError as exc:
            return exc
        except Exception as exc:  # decode_image_info names its own; belt and braces
            return InvalidImageError(f"{name}: corrupt or unsupported image ({exc!r})")

    def _in_workers(
        self, sources: Sequence[ImageSource], *, cancel: threading.Event | None
    ) -> list[Result]:
        wire: list[bytes | str] = []
        for source in sources:
            if isinstance(source, bytes):
                wire.append(source)
            elif isinstance(source, (str, os.PathLike)):
                wire.append(os.fsdecode(os.fspath(source)))
            else:
                wire.append(bytes(source.read()))
        names = [describe_source(s) for s in sources]
        out: list[Result] = []
        while len(out) < len(wire):
            if cancel is not None and cancel.is_set():
                out += [InvalidImageError(f"{n}: decoding cancelled") for n in names[len(out) :]]
                break
            worker = self._take()
            done = False
            try:
                answers, done = worker.call(
                    wire[len(out) :],
                    names[len(out) :],
                    max_pixels=self.max_pixels,
                    cpu_seconds=self.cpu_seconds,
                    wall_seconds=self.wall_seconds,
                    cancel=cancel,
                )
                out += answers
            finally:
                self._give(worker if done else None, killed=not done)
        self.stats["in_workers"] += len(wire)
        return out

    def _take(self) -> WorkerProcess:
        worker = self._slots.get()
        if worker is None or not worker.alive:
            try:
                worker = WorkerProcess.start(memory_bytes=self.memory_bytes)
            except BaseException:
                self._slots.put(None)
                raise
            self.stats["started"] += 1
        return worker

    def _give(self, worker: WorkerProcess | None, *, killed: bool) -> None:
        if killed:
            self.stats["killed"] += 1
        self._slots.put(worker)


_default: list[DecodeSandbox] = []
_default_lock = threading.Lock()


def default_sandbox() -> DecodeSandbox:
    """The process-wide sandbox of the command line (created when first used, two workers at
    most, the default limits; its workers end with the process)."""
    with _default_lock:
        if not _default:
            _default.append(DecodeSandbox(workers=max(1, min(2, os.cpu_count() or 1))))
        return _default[0]
