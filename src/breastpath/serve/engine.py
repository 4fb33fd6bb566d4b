"""Run the model off the event loop: one inference thread, requests batched together, bounded.

Every request that needs the model puts a job on one queue. A dispatcher task takes the first
job and every scoring job already waiting behind it (up to ``max_batch_size`` images), runs them
as one batch on a single inference thread, and hands each request its rows. While the model
works, the event loop keeps accepting and decoding uploads, so under load batches fill up by
themselves; a lone request is never held back waiting for company.

Bounds: at most ``max_pending`` jobs wait (more get 503 at once), and a request waits at most
``timeout_s`` for its answer (then 504; a job whose request gave up is dropped, not run).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from breastpath.inference.predictor import Predictor
from breastpath.serve.errors import ApiError
from breastpath.serve.limits import ServeLimits

T = TypeVar("T")


@dataclass
class _Job:
    future: asyncio.Future
    batch: np.ndarray | None = None  # a scoring job: uint8 images at the input size
    call: Callable[[], Any] | None = None  # any other model work (Grad-CAM)
    queued: float = field(default_factory=time.perf_counter)


class InferenceEngine:
    """Batched, bounded access to a :class:`Predictor` from async code.

    Examples
    --------
    >>> engine = InferenceEngine(predictor, ServeLimits())  # doctest: +SKIP
    >>> probs = await engine.predict_proba(predictor.prepare([patch]))  # doctest: +SKIP
    """

    def __init__(self, predictor: Predictor, limits: ServeLimits) -> None:
        self.predictor = predictor
        self.limits = limits
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="breastpath-inference")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._held: _Job | None = None
        self.stats = {"batches": 0, "images": 0, "largest_batch": 0, "rejected": 0, "timeouts": 0}

    # ------------------------------------------------------------------ life cycle
    def _ensure_running(self) -> asyncio.Queue[_Job]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._held = None
            self._task = loop.create_task(self._dispatch(), name="breastpath-dispatcher")
        assert self._queue is not None
        return self._queue

    async def stop(self) -> None:
        """Stop the dispatcher (pending requests get 503); the engine restarts on next use."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._queue is not None:
            while not self._queue.empty():
                self._fail(self._queue.get_nowait(), ApiError(503, "server is shutting down"))

    @property
    def pending(self) -> int:
        """Jobs waiting for the model."""
        return (self._queue.qsize() if self._queue is not None else 0) + (self._held is not None)

    # ------------------------------------------------------------------ public API
    async def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for ``(N, H, W, 3)`` uint8 images at the model's input size."""
        if len(batch) == 0:
            return np.zeros((0, len(self.predictor.class_names)))
        return await self._submit(batch=batch)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the inference thread, in turn with scoring jobs."""
        return await self._submit(call=lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ internals
    async def _submit(self, **job: Any) -> Any:
        queue = self._ensure_running()
        if self.pending >= self.limits.max_pending:
            self.stats["rejected"] += 1
            raise ApiError(503, f"server busy: {self.pending} requests waiting for the model")
        future = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Job(future=future, **job))
        try:
            # on timeout wait_for cancels the future: the dispatcher then drops the job
            return await asyncio.wait_for(future, self.limits.timeout_s)
        except asyncio.TimeoutError:
            self.stats["timeouts"] += 1
            raise ApiError(
                504, f"the model did not answer within {self.limits.timeout_s:g} s; try again"
            ) from None
        except asyncio.CancelledError:
            future.cancel()  # the client went away: drop the job if it has not started
            raise

    @staticmethod
    def _fail(job: _Job, error: BaseException) -> None:
        if not job.future.done():
            job.future.set_exception(error)

    def _collect(self, first: _Job, queue: asyncio.Queue[_Job]) -> list[_Job]:
        """``first`` plus the scoring jobs queued right behind it, up to the batch size."""
        jobs, images = [first], len(first.batch)  # type: ignore[arg-type]
        while images < self.limits.max_batch_size and not queue.empty():
            job = queue.get_nowait()
            if job.future.done():
                continue
            if job.batch is None or images + len(job.batch) > self.limits.max_batch_size:
                self._held = job  # runs next, in order
                break
            jobs.append(job)
            images += len(job.batch)
        return jobs

    async def _dispatch(self) -> None:
        queue = self._queue
        assert queue is not None
        loop = asyncio.get_running_loop()
        while True:
            job = self._held or await queue.get()
            self._held = None
            if job.future.done():  # cancelled or timed out while waiting
                continue
            if job.call is not None:
                try:
                    result = await loop.run_in_executor(self._executor, job.call)
                except Exception as exc:
                    self._fail(job, exc)
                else:
                    if not job.future.done():
                        job.future.set_result(result)
                continue
            jobs = self._collect(job, queue)
            batch = np.concatenate([j.batch for j in jobs]) if len(jobs) > 1 else job.batch
            try:
                probs = await loop.run_in_executor(
                    self._executor, self.predictor.predict_proba, batch
                )
            except Exception as exc:
                for j in jobs:
                    self._fail(j, exc)
                continue
            self.stats["batches"] += 1
            self.stats["images"] += len(batch)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
            start = 0
            for j in jobs:
                n = len(j.batch)  # type: ignore[arg-type]
                if not j.future.done():
                    j.future.set_result(probs[start : start + n])
                start += n
