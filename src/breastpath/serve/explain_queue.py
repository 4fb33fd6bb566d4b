"""Grad-CAM's own queue: explanations run apart from plain predictions, a few at a time.

An explanation (``?explain=true``) costs a backward pass per tile, many times a prediction. It
runs on its own thread (:attr:`ExplainQueue.max_running` of them, ``--max-explain``), never on
the inference thread of :class:`~breastpath.serve.engine.InferenceEngine`, so a plain prediction
never waits behind one. At most ``max_explain_pending`` more wait for a turn; one more, or one
that has not started within ``timeout_s``, gets **503 with ``Retry-After``** at once (the
seconds an explanation has been taking, times the turns ahead) instead of a 504 much later.
The server takes the turn when the request arrives (:meth:`ExplainQueue.turn`), so a request
turned away has not been decoded or scored, and the requests being explained (their images and
tiles) are bounded too.

A turn is held until the explanation's work has ended, even when its client hung up (which
stops the work between Grad-CAM chunks): the work, not the request, holds the turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from breastpath.serve.errors import ApiError
from breastpath.serve.limits import ServeLimits

T = TypeVar("T")

#: Weight of the newest explanation in the running mean of their duration (for Retry-After).
_NEWEST = 0.3


class ExplainQueue:
    """Bounded, separate execution of explanations.

    Examples
    --------
    >>> import asyncio, threading
    >>> queue = ExplainQueue(ServeLimits(max_explain=1, max_explain_pending=0))
    >>> asyncio.run(queue.run(lambda cancel: "explained"))
    'explained'
    >>> queue.close()
    """

    def __init__(self, limits: ServeLimits) -> None:
        self.max_running = limits.max_explain
        self.max_waiting = limits.max_explain_pending
        self.timeout_s = limits.timeout_s
        self._executor: ThreadPoolExecutor | None = None  # started at the first explanation
        self._running = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._seconds = 0.0  # running mean of an explanation's duration (0: none yet)
        self.stats = {"finished": 0, "rejected": 0, "abandoned": 0}

    @property
    def running(self) -> int:
        """Explanations being computed now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Explanations waiting for a turn."""
        return len(self._waiters)

    def retry_after(self) -> int:
        """Seconds to suggest to a client turned away (at least 1)."""
        turns = (self._running + len(self._waiters)) / self.max_running
        return max(1, math.ceil(max(self._seconds, 1.0) * max(turns, 1.0)))

    def _busy(self, why: str) -> ApiError:
        self.stats["rejected"] += 1
        seconds = self.retry_after()
        return ApiError(
            503,
            f"explanations are busy ({why}); try again in {seconds} s, or ask without explain",
            headers={"Retry-After": str(seconds)},
        )

    def full(self) -> bool:
        """Whether an explanation asked for now would be turned away (no turn free, no room to
        wait)."""
        free = self._running < self.max_running and not self._waiters
        return not free and len(self._waiters) >= self.max_waiting

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[Turn]:
        """Hold a turn for a whole explained request (its decoding and scoring too, so that a
        request turned away is turned away on arrival, before any work): 503 with
        ``Retry-After`` when none is free and the waiting room is full, or when none came
        within ``timeout_s``. Run the Grad-CAM work with :meth:`Turn.run`. The turn is given
        back on leaving the block, or when the work started in it ends, whichever is later."""
        await self._admit()
        held = Turn(self)
        started = time.perf_counter()
        try:
            yield held
        finally:
            work = held.future
            if work is not None and not work.done():  # the caller left; the work goes on
                work.add_done_callback(lambda _: self._leave(time.perf_counter() - started))
            else:
                self._leave(time.perf_counter() - started)

    async def run(self, work: Callable[[threading.Event], T]) -> T:
        """``work(cancel)`` on an explanation thread in a turn of its own (see :meth:`turn`)."""
        async with self.turn() as held:
            return await held.run(work)

    def _start(self, work: Callable[[threading.Event], T], cancel: threading.Event) -> Any:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.max_running, thread_name_prefix="breastpath-explain"
            )
        return asyncio.get_running_loop().run_in_executor(self._executor, work, cancel)

    async def _admit(self) -> None:
        if self._running < self.max_running and not self._waiters:
            self._running += 1
            return
        if len(self._waiters) >= self.max_waiting:
            raise self._busy(f"{self._running} running, {len(self._waiters)} waiting")
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await asyncio.wait_for(turn, self.timeout_s)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            if turn.done() and not turn.cancelled():
                self._leave()  # granted just as we gave up
            elif turn in self._waiters:
                self._waiters.remove(turn)
            if isinstance(exc, asyncio.TimeoutError):
                raise self._busy(f"no turn within {self.timeout_s:g} s") from None
            raise

    def _leave(self, seconds: float | None = None) -> None:
        """Give a turn back (recording how long its work took) and hand it to the next waiter."""
        self._running -= 1
        if seconds is not None:
            self.stats["finished"] += 1
            self._seconds = (
                seconds
                if not self._seconds
                else (_NEWEST * seconds + (1 - _NEWEST) * self._seconds)
            )
        while self._waiters and self._running < self.max_running:
            turn = self._waiters.popleft()
            if not turn.done():
                self._running += 1
                turn.set_result(None)

    def close(self) -> None:
        """Stop the explanation threads (running work finishes; none is started again)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class Turn:
    """A turn of :class:`ExplainQueue` (from :meth:`ExplainQueue.turn`)."""

    def __init__(self, queue: ExplainQueue) -> None:
        self._queue = queue
        self.future: asyncio.Future | None = None  # the work started in this turn

    async def run(self, work: Callable[[threading.Event], T]) -> T:
        """``work(cancel)`` on an explanation thread. A cancelled caller sets ``cancel``
        (``work`` should check it between steps) and leaves at once; the turn stays held until
        ``work`` has returned."""
        cancel = threading.Event()
        future = self._queue._start(work, cancel)
        self.future = future
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self._queue.stats["abandoned"] += 1
            cancel.set()
            raise
