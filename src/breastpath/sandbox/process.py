"""One decode worker process seen from the parent: start it, call it, read its answers within
a deadline, kill it.

The worker (:mod:`breastpath.sandbox.worker`) is a fresh interpreter started with
``subprocess`` (no fork of the parent's threads and model), one BLAS thread, glibc arenas and
mmap threshold kept small so freed pixels go back to the system at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from breastpath.errors import DecodeLimitError, InvalidImageError
from breastpath.imaging import DecodedImage
from breastpath.sandbox import worker as wire

#: How long a new worker may take to import its decoders.
START_SECONDS = 60.0
#: How often a waiting parent looks at its cancel event.
_POLL_SECONDS = 0.05
_BOOT = "from breastpath.sandbox.worker import main; main()"


class _Stopped(Exception):
    """The worker must be killed: ``why`` is "wall", "cancel" or "died"."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.update(
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MALLOC_ARENA_MAX="2",
        MALLOC_MMAP_THRESHOLD_=str(1 << 20),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


class WorkerProcess:
    """A started worker; :meth:`call` decodes a list of sources in it."""

    def __init__(self, process: subprocess.Popen, *, memory_bytes: int) -> None:
        self.process = process
        self.memory_bytes = int(memory_bytes)
        assert process.stdout is not None and process.stdin is not None
        self._out = process.stdout.fileno()
        self._in = process.stdin

    @classmethod
    def start(cls, *, memory_bytes: int) -> WorkerProcess:
        """Start a worker capped at ``memory_bytes`` of address space; wait until it is ready."""
        process = subprocess.Popen(  # our own interpreter and module
            [sys.executable, "-c", _BOOT, str(int(memory_bytes))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_environment(),
            close_fds=True,
        )
        worker = cls(process, memory_bytes=memory_bytes)
        try:
            ready = worker._read(1, deadline=time.monotonic() + START_SECONDS, cancel=None)
        except _Stopped:
            ready = b""
        if ready != wire.READY:
            worker.kill()
            raise RuntimeError(f"the decode worker did not start (exit status {process.poll()})")
        return worker

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """End the worker now (SIGKILL) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    # ------------------------------------------------------------------ one call
    def call(
        self,
        sources: list[bytes | str],
        names: list[str],
        *,
        max_pixels: int,
        cpu_seconds: int,
        wall_seconds: float,
        cancel: threading.Event | None,
    ) -> tuple[list[DecodedImage | InvalidImageError], bool]:
        """Decode ``sources``; the answers received and whether the worker is still usable.

        When the worker has to be killed (a limit passed, a crash, ``cancel`` set) the answers
        stop at the image it was working on, which gets the error naming the limit; the caller
        sends the rest to a fresh worker.
        """
        answers: list[DecodedImage | InvalidImageError] = []
        try:
            self._in.write(
                wire.encode_call(sources, max_pixels=max_pixels, cpu_seconds=cpu_seconds)
            )
            self._in.flush()
            for name in names:
                deadline = time.monotonic() + wall_seconds
                answers.append(self._answer(name, max_pixels, deadline, cancel))
        except (_Stopped, BrokenPipeError, OSError) as exc:
            why = exc.why if isinstance(exc, _Stopped) else "died"
            self.kill()
            name = names[len(answers)]
            answers.append(self._stopped(why, name, cpu_seconds, wall_seconds))
            return answers, False
        return answers, True

    def _stopped(self, why: str, name: str, cpu_seconds: int, wall: float) -> InvalidImageError:
        if why == "cancel":
            return InvalidImageError(f"{name}: decoding cancelled")
        if why == "wall":
            return DecodeLimitError(
                f"{name}: decoding took more than the limit of {wall:g} s of wall time; "
                "the decoder was stopped"
            )
        code = self.process.returncode
        if code in (-signal.SIGXCPU, -signal.SIGKILL):
            return DecodeLimitError(
                f"{name}: decoding used more than the limit of {cpu_seconds} s of CPU time; "
                "the decoder was stopped"
            )
        return InvalidImageError(f"{name}: the decoder failed on this image (exit status {code})")

    def _answer(
        self, name: str, max_pixels: int, deadline: float, cancel: threading.Event | None
    ) -> DecodedImage | InvalidImageError:
        kind = self._read(1, deadline=deadline, cancel=cancel)
        if kind == b"E":
            what, length = wire.ERROR.unpack(self._read(wire.ERROR.size, deadline, cancel))
            message = self._read(length, deadline, cancel).decode("utf-8", "replace")
            if what == b"M":
                mib = self.memory_bytes >> 20
                return DecodeLimitError(
                    f"{name}: decoding needed more than the limit of {mib} MiB of memory"
                )
            return InvalidImageError(message)
        if kind != b"K":
            raise _Stopped("died")
        head = self._read(wire.PIXELS.size, deadline, cancel)
        height, width, frames, fmt = wire.PIXELS.unpack(head)
        if height * width > max_pixels:
            raise _Stopped("died")  # a worker never sends more; do not trust it further
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        self._read_into(memoryview(pixels.data).cast("B"), deadline, cancel)
        return DecodedImage(pixels, fmt.rstrip(b"\0 ").decode("ascii", "replace"), int(frames))

    def _read(self, size: int, deadline: float, cancel: threading.Event | None) -> bytes:
        buffer = bytearray(size)
        self._read_into(memoryview(buffer), deadline, cancel)
        return bytes(buffer)

    def _read_into(self, view: memoryview, deadline: float, cancel: threading.Event | None) -> None:
        got = 0
        while got < len(view):
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Stopped("wall")
            if cancel is not None and cancel.is_set():
                raise _Stopped("cancel")
            wait = min(left, _POLL_SECONDS) if cancel is not None else left
            ready, _, _ = select.select([self._out], [], [], wait)
            if not ready:
                continue
            count = os.readv(self._out, [view[got:]])
            if count == 0:
                raise _Stopped("died")
            got += count
