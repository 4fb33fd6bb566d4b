"""Run the model off the event loop: one inference thread, fair between requests, bounded.

Every request that needs the model puts a job on the queue of its **owner** (the HTTP request it
belongs to, :data:`current_owner`). A dispatcher task builds each model call of at most
``max_batch_size`` images by visiting the owners in turn (round-robin) and taking rows from the
head job of each, so one request with 65,000 tiles cannot hold the model: it gets its share of
every call and a request with one patch waits for at most one call in flight plus its own. The
call runs on a single inference thread; while the model works the event loop keeps accepting and
decoding uploads, so under load calls fill up by themselves and a lone request is never held
back waiting for company.

Bounds: at most ``max_pending`` jobs wait (more get 503 at once), and a job waits at most
``timeout_s`` for its answer (then 504). A job whose request gave up (timed out, or cancelled
because its client went away) is dropped with all its rows not yet run.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from breastpath.inference.predictor import Predictor
from breastpath.serve.errors import ApiError
from breastpath.serve.limits import ServeLimits

T = TypeVar("T")

#: While several requests wait for the model, a call holds at most ``max_batch_size`` divided
#: by this (but at least one row per waiting request): a request arriving behind a large job
#: then waits for a shorter call in flight.
CONTENDED_SHARE = 4

#: The request a job belongs to (set per HTTP request by the app's middleware); jobs without
#: one are each their own owner.
current_owner: contextvars.ContextVar[Hashable | None] = contextvars.ContextVar(
    "breastpath_request", default=None
)


@dataclass(eq=False)
class _Job:
    future: asyncio.Future
    owner: Hashable
    batch: np.ndarray | None = None  # a scoring job: uint8 images at the input size
    call: Callable[[], Any] | None = None  # any other model work (Grad-CAM), run whole
    done_rows: int = 0  # rows of ``batch`` already scored
    parts: list[np.ndarray] = field(default_factory=list)
    queued: float = field(default_factory=time.perf_counter)

    @property
    def left(self) -> int:
        return 0 if self.batch is None else len(self.batch) - self.done_rows


class InferenceEngine:
    """Batched, fair and bounded access to a :class:`Predictor` from async code.

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
        self._owners: OrderedDict[Hashable, deque[_Job]] = OrderedDict()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._waiting = 0
        self.stats = {
            "batches": 0,
            "images": 0,
            "largest_batch": 0,
            "rejected": 0,
            "timeouts": 0,
            "dropped_rows": 0,
        }

    # ------------------------------------------------------------------ life cycle
    def _ensure_running(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._owners = OrderedDict()
            self._waiting = 0
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._dispatch(), name="breastpath-dispatcher")
        assert self._wake is not None
        return self._wake

    async def stop(self) -> None:
        """Stop the dispatcher (pending requests get 503); the engine restarts on next use."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for jobs in self._owners.values():
            for job in jobs:
                self._fail(job, ApiError(503, "server is shutting down"))
        self._owners.clear()

    @property
    def pending(self) -> int:
        """Jobs waiting for the model or running."""
        return self._waiting

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
    async def _submit(self, **work: Any) -> Any:
        wake = self._ensure_running()
        if self._waiting >= self.limits.max_pending:
            self.stats["rejected"] += 1
            raise ApiError(503, f"server busy: {self._waiting} requests waiting for the model")
        future = asyncio.get_running_loop().create_future()
        owner = current_owner.get()
        job = _Job(future=future, owner=owner if owner is not None else object(), **work)
        if job.owner not in self._owners:
            self._owners[job.owner] = deque()
            self._owners.move_to_end(job.owner, last=False)  # a newcomer goes first
        self._owners[job.owner].append(job)
        self._waiting += 1
        wake.set()
        try:
            # on timeout wait_for cancels the future: the dispatcher then drops the job
            return await asyncio.wait_for(future, self.limits.timeout_s)
        except asyncio.TimeoutError:
            self.stats["timeouts"] += 1
            raise ApiError(
                504, f"the model did not answer within {self.limits.timeout_s:g} s; try again"
            ) from None
        except asyncio.CancelledError:
            future.cancel()  # the client went away: drop what has not run
            raise
        finally:
            self._waiting -= 1

    @staticmethod
    def _fail(job: _Job, error: BaseException) -> None:
        if not job.future.done():
            job.future.set_exception(error)

    def _next_jobs(self) -> tuple[_Job | None, list[tuple[_Job, int, int]]]:
        """The next model call: a whole ``call`` job, or row ranges taken from the owners in
        turn, at most ``max_batch_size`` rows in all; while several owners wait, at most
        ``max_batch_size // CONTENDED_SHARE`` rows per turn (shorter calls: a newcomer waits
        for less)."""
        room = self.limits.max_batch_size
        if len(self._owners) > 1:
            room = min(room, max(len(self._owners), room // CONTENDED_SHARE))
        claimed: dict[_Job, int] = {}  # rows claimed per job for this call
        taken: list[tuple[_Job, int, int]] = []
        while room > 0:
            job = self._next_rows(claimed)
            if job is None:
                break
            if job.call is not None:
                if taken:
                    break  # runs on its own, in the next call
                self._discard(job)
                return job, []
            start = job.done_rows + claimed.get(job, 0)
            count = min(room, len(job.batch) - start)  # type: ignore[arg-type]
            taken.append((job, start, count))
            claimed[job] = claimed.get(job, 0) + count
            room -= count
        return None, taken

    def _next_rows(self, claimed: dict[_Job, int]) -> _Job | None:
        """The first unfinished job of the next owner in turn (the owner moves to the back)."""
        for owner in list(self._owners):
            jobs = self._owners[owner]
            for job in list(jobs):
                if job.future.done():  # timed out or cancelled: drop its rows
                    self.stats["dropped_rows"] += job.left
                    jobs.remove(job)
                elif job.call is not None or job.left > claimed.get(job, 0):
                    self._owners.move_to_end(owner)
                    return job
            if not jobs:
                del self._owners[owner]
        return None

    async def _run_call(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, job.call)  # type: ignore[arg-type]
        except Exception as exc:
            self._fail(job, exc)
        else:
            if not job.future.done():
                job.future.set_result(result)

    async def _run_rows(self, taken: list[tuple[_Job, int, int]]) -> None:
        loop = asyncio.get_running_loop()
        pieces = [j.batch[s : s + n] for j, s, n in taken]  # type: ignore[index]
        batch = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        try:
            probs = await loop.run_in_executor(self._executor, self.predictor.predict_proba, batch)
        except Exception as exc:
            for job, _, _ in taken:
                self._fail(job, exc)
                self._discard(job)
            return
        self.stats["batches"] += 1
        self.stats["images"] += len(batch)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        offset = 0
        for job, _, count in taken:
            job.parts.append(probs[offset : offset + count])
            job.done_rows += count
            offset += count
            if job.left == 0:
                self._discard(job)
                if not job.future.done():
                    rows = job.parts[0] if len(job.parts) == 1 else np.concatenate(job.parts)
                    job.future.set_result(rows)

    def _discard(self, job: _Job) -> None:
        jobs = self._owners.get(job.owner)
        if jobs and job in jobs:
            jobs.remove(job)
            if not jobs:
                del self._owners[job.owner]

    async def _dispatch(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            call, taken = self._next_jobs()
            if call is not None:
                await self._run_call(call)
            elif taken:
                await self._run_rows(taken)
            else:
                wake.clear()
                await wake.wait()


class PixelGate:
    """A server-wide bound on the pixels being decoded at once (a weighted semaphore).

    Decoding an image holds about 7 bytes per pixel for a moment (Pillow's copy and ours); the
    gate lets images in while their pixels together stay within ``capacity``, so a handful of
    concurrent 8192 x 8192 uploads decode one after the other instead of all at once. An image
    larger than the capacity waits until it is alone. Waiters are served in arrival order.

    Examples
    --------
    >>> import asyncio
    >>> async def demo():
    ...     gate = PixelGate(100)
    ...     async with gate.hold(60):
    ...         return gate.in_use
    >>> asyncio.run(demo())
    60
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    def _fits(self, weight: int) -> bool:
        return self.in_use == 0 or self.in_use + weight <= self.capacity

    async def acquire(self, weight: int) -> int:
        """Wait until ``weight`` pixels fit, take them, and return the weight taken (clipped to
        the capacity); give it back with :meth:`release`."""
        weight = max(0, min(int(weight), self.capacity))
        if self._waiters or not self._fits(weight):
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((weight, future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release(weight)  # granted just as we were cancelled
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove((weight, future))
                    self._grant()
                raise
        else:
            self.in_use += weight
        return weight

    def release(self, weight: int) -> None:
        """Give back what :meth:`acquire` took."""
        self._release(weight)

    @contextlib.asynccontextmanager
    async def hold(self, weight: int) -> Any:
        """Hold ``weight`` pixels of the capacity for the duration of the block."""
        taken = await self.acquire(weight)
        try:
            yield
        finally:
            self._release(taken)

    async def run(
        self, weight: int, call: Callable[[], T], *, on_cancel: Callable[[], None] | None = None
    ) -> T:
        """``call()`` in a worker thread, holding ``weight`` pixels until it returns.

        A caller cancelled meanwhile (its client hung up) calls ``on_cancel`` (which should make
        ``call`` stop early) and leaves at once, but the pixels stay held until ``call`` has
        actually ended: the work, not the request, holds the budget.
        """
        taken = await self.acquire(weight)
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(None, call)
        except BaseException:
            self._release(taken)
            raise

        def done(finished: asyncio.Future) -> None:
            self._release(taken)
            if not finished.cancelled():
                finished.exception()  # retrieved: a cancelled caller never reads it

        future.add_done_callback(done)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if on_cancel is not None:
                on_cancel()
            raise

    def _release(self, weight: int) -> None:
        self.in_use -= weight
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            weight, future = self._waiters.popleft()
            if future.done():
                continue
            self.in_use += weight
            future.set_result(None)
