"""CPU seconds per stage of a tile pipeline, summed over the threads that ran each stage.

A :class:`StageClock` is handed to the slide pipeline (``analyze_slide(..., clock=...)``) and
to the tile core; each stage adds the CPU time of the thread that ran it
(:func:`time.thread_time`), so stages run in reader threads are counted where they ran. The
model's runtime runs its own threads, which no thread clock of ours sees: ``model`` holds the
CPU of the calling thread only, and ``benchmarks/bench_slide.py`` reports the model as the
process's CPU time less the other stages.

Examples
--------
>>> clock = StageClock()
>>> with clock.stage("check"):
...     _ = sum(range(1000))
>>> sorted(clock.seconds())
['check']
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

__all__ = ["STAGES", "StageClock", "timed"]

#: The stages the slide pipeline reports, in pipeline order.
STAGES = ("open_and_mask", "read", "resample", "check", "model")


class StageClock:
    """Per-stage CPU seconds (thread CPU time) and call counts, safe to share between threads."""

    def __init__(self) -> None:
        self._cpu: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` of CPU time to stage ``name``."""
        with self._lock:
            self._cpu[name] = self._cpu.get(name, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the CPU time of this thread inside the ``with`` block as stage ``name``."""
        started = time.thread_time()
        try:
            yield
        finally:
            self.add(name, time.thread_time() - started)

    def seconds(self) -> dict[str, float]:
        """CPU seconds per stage so far."""
        with self._lock:
            return dict(self._cpu)


def timed(clock: StageClock | None, name: str) -> AbstractContextManager[None]:
    """``clock.stage(name)``, or a context that does nothing when ``clock`` is None."""
    return nullcontext() if clock is None else clock.stage(name)
