"""Model hogging and abandoned work: fair model calls, cancelled jobs dropped, a client leaving.

All with a stand-in model that records its calls, so the order of events is exact (no timing).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from breastpath.serve.engine import InferenceEngine, PixelGate, current_owner
from breastpath.serve.limits import ServeLimits
from breastpath.serve.middleware import RequestGuard


class RecordingModel:
    """Stands in for a Predictor: each call records which rows (by their first pixel) it saw;
    a call waits until the test lets it finish."""

    class_names = ("a", "b")

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = None  # threading.Event set per call when stepping

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append([int(v) for v in batch[:, 0, 0, 0]])
        first = batch[:, 0, 0, 0].astype(np.float64) / 255.0
        return np.stack([1.0 - first, first], axis=1)


def _rows(value: int, count: int) -> np.ndarray:
    return np.full((count, 2, 2, 3), value, np.uint8)


async def _as_owner(owner: object, coro):
    current_owner.set(owner)
    return await coro


def test_a_huge_job_is_cut_into_calls_and_shares_them_round_robin():
    model = RecordingModel()
    engine = InferenceEngine(model, ServeLimits(max_batch_size=8))

    async def scenario():
        heavy = asyncio.ensure_future(_as_owner("heavy", engine.predict_proba(_rows(1, 40))))
        await asyncio.sleep(0)  # the heavy job is queued first
        small = [
            asyncio.ensure_future(_as_owner(f"small{i}", engine.predict_proba(_rows(2 + i, 1))))
            for i in range(3)
        ]
        out = await asyncio.gather(heavy, *small)
        await engine.stop()
        return out

    heavy, *small = asyncio.run(scenario())
    assert all(len(call) <= 8 for call in model.calls)  # --batch-size holds for one big job
    assert sum(len(call) for call in model.calls) == 43
    # the small requests are all in the first or second call, not after 40 heavy rows
    first_two = model.calls[0] + model.calls[1]
    assert {2, 3, 4} <= set(first_two)
    assert heavy.shape == (40, 2) and np.allclose(heavy[:, 1], 1 / 255)
    assert [round(s[0, 1] * 255) for s in small] == [2, 3, 4]


def test_a_small_request_waits_at_most_one_call_behind_a_running_heavy_one():
    import threading

    model = RecordingModel()
    permits = threading.Semaphore(0)
    record = model.predict_proba

    def gated(batch):
        out = record(batch)
        permits.acquire()  # each call finishes when the test says so
        return out

    model.predict_proba = gated  # type: ignore[method-assign]
    engine = InferenceEngine(model, ServeLimits(max_batch_size=4))

    async def calls(count: int) -> None:
        while len(model.calls) < count:
            await asyncio.sleep(0.001)

    async def scenario():
        heavy = asyncio.ensure_future(_as_owner("heavy", engine.predict_proba(_rows(1, 400))))
        await calls(1)  # the heavy job's first call is running
        small = asyncio.ensure_future(_as_owner("small", engine.predict_proba(_rows(7, 1))))
        await asyncio.sleep(0.01)  # queued behind the running call
        permits.release()
        await calls(2)
        second = list(model.calls[1])
        permits.release()
        answer = await small
        heavy.cancel()
        for _ in range(200):
            permits.release()
        await engine.stop()
        return second, answer

    second, answer = asyncio.run(scenario())
    assert 7 in second  # the very next call, not after the 396 heavy rows left
    assert round(answer[0, 1] * 255) == 7


def test_a_cancelled_request_drops_its_remaining_rows():
    model = RecordingModel()
    engine = InferenceEngine(model, ServeLimits(max_batch_size=4))

    async def scenario():
        job = asyncio.ensure_future(_as_owner("gone", engine.predict_proba(_rows(1, 40_000))))
        while len(model.calls) < 2:
            await asyncio.sleep(0.001)
        job.cancel()  # what the server does when the client leaves or the request times out
        with pytest.raises(asyncio.CancelledError):
            await job
        calls = len(model.calls)
        # another request still gets served, and the dropped rows never run
        await _as_owner("next", engine.predict_proba(_rows(9, 1)))
        await engine.stop()
        return calls, engine.stats["dropped_rows"]

    calls, dropped = asyncio.run(scenario())
    assert len(model.calls) <= calls + 2  # the call in flight, and the next request's
    assert dropped > 30_000 and sum(len(c) for c in model.calls) + dropped == 40_001


def test_a_timed_out_job_is_dropped_too():
    model = RecordingModel()
    engine = InferenceEngine(model, ServeLimits(max_batch_size=1, timeout_s=0.05))
    import time

    slow = model.predict_proba

    def crawl(batch):
        time.sleep(0.02)
        return slow(batch)

    model.predict_proba = crawl  # type: ignore[method-assign]

    async def scenario():
        from breastpath.serve.errors import ApiError

        with pytest.raises(ApiError) as caught:
            await _as_owner("slow", engine.predict_proba(_rows(1, 500)))
        await asyncio.sleep(0.1)
        ran = len(model.calls)
        await asyncio.sleep(0.1)
        await engine.stop()
        return caught.value.status, ran, len(model.calls)

    status, ran, later = asyncio.run(scenario())
    assert status == 504
    assert ran < 500 and later <= ran + 1  # stopped soon after its 504


def test_the_pixel_gate_lets_one_large_image_decode_at_a_time():
    gate = PixelGate(100)
    order: list[str] = []

    async def hold(name: str, weight: int, steps: int) -> None:
        async with gate.hold(weight):
            order.append(f"+{name}")
            assert gate.in_use <= 100 or gate.in_use == weight
            for _ in range(steps):
                await asyncio.sleep(0)
            order.append(f"-{name}")

    async def scenario():
        await asyncio.gather(
            hold("a", 80, 3), hold("b", 80, 1), hold("c", 10, 1), hold("d", 500, 1)
        )

    asyncio.run(scenario())
    assert order.index("-a") < order.index("+b")  # 80 + 80 > 100: b waits for a
    assert order.index("+c") > order.index("+b")  # first come, first served
    assert order.index("+d") > order.index("-c")  # larger than the gate: waits to be alone


def test_the_request_is_cancelled_when_its_client_leaves():
    seen = {"cancelled": False, "sent": []}

    async def app(scope, receive, send):
        await receive()  # the whole body
        try:
            await asyncio.sleep(30)  # a long model job
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    guard = RequestGuard(app, limit_for=lambda path: 1000, describe=lambda path: "too large")
    messages = [{"type": "http.request", "body": b"x", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}  # the client closed the connection

    async def send(message):
        seen["sent"].append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/predict/batch", "headers": []}
    asyncio.run(asyncio.wait_for(guard(scope, receive, send), 5))
    assert seen["cancelled"] is True and seen["sent"] == []


def test_a_body_that_does_not_arrive_in_time_gets_408():
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass

    guard = RequestGuard(
        app, limit_for=lambda path: 10**6, describe=lambda path: "", body_timeout_s=0.05
    )
    sent = []

    async def receive():
        await asyncio.sleep(0.02)
        return {"type": "http.request", "body": b"x", "more_body": True}  # a byte at a time

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/predict", "headers": []}
    asyncio.run(asyncio.wait_for(guard(scope, receive, send), 5))
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
