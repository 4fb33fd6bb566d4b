"""Issue 29, defect 8: Grad-CAM under load.

Explanations have their own threads and queue: a plain prediction never waits behind one, a full
queue is a prompt 503 with ``Retry-After`` (not a 504 much later), and one explanation covers a
bounded number of tiles, in bounded passes. The explainer is slowed with an event the test
holds, so every order of events is exact (no wall-clock thresholds).
"""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastpath.inference.predictor import Predictor
from breastpath.serve import explain as explaining
from breastpath.serve.app import ServeLimits, create_app
from breastpath.serve.errors import ApiError
from breastpath.serve.explain_queue import ExplainQueue
from conftest import synthetic_patch

#: Longest a held explainer waits for the test (a failing test must not hang the suite).
HOLD_S = 60


def _png(size=(50, 50), seed=0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(synthetic_patch(np.random.default_rng(seed), 1, size=size)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


@pytest.fixture()
def held_predictor(monkeypatch):
    """The default model whose Grad-CAM waits until the test releases it."""
    predictor = Predictor.from_checkpoint("default")
    entered, release = threading.Event(), threading.Event()
    real = predictor.grad_cam

    def slow(batch, **kwargs):
        entered.set()
        release.wait(HOLD_S)
        return real(batch, **kwargs)

    monkeypatch.setattr(predictor, "grad_cam", slow)
    yield predictor, entered, release
    release.set()


def test_a_full_explain_queue_is_a_503_with_retry_after_while_plain_predict_succeeds(
    held_predictor,
):
    predictor, entered, release = held_predictor
    limits = ServeLimits(max_explain=1, max_explain_pending=0)
    with TestClient(create_app(predictor, limits=limits), raise_server_exceptions=False) as client:
        first: dict = {}

        def explain_first() -> None:
            first["response"] = client.post(
                "/api/predict?explain=true", files={"file": ("a.png", _png(), "image/png")}
            )

        worker = threading.Thread(target=explain_first)
        worker.start()
        assert entered.wait(HOLD_S)  # the first explanation is running (and held)

        scored = client.app.state.service.engine.stats["images"]
        busy = client.post(
            "/api/predict?explain=true", files={"file": ("b.png", _png(seed=1), "image/png")}
        )
        assert busy.status_code == 503, busy.text
        assert client.app.state.service.engine.stats["images"] == scored  # refused before work
        assert int(busy.headers["Retry-After"]) >= 1
        assert "explanations are busy" in busy.json()["detail"]

        plain = client.post("/api/predict", files={"file": ("c.png", _png(seed=2), "image/png")})
        assert plain.status_code == 200, plain.text  # not behind the held explanation
        assert "explain" not in plain.json()
        assert not release.is_set()  # ... and it was answered while the explanation was held

        release.set()
        worker.join(HOLD_S)
        assert first["response"].status_code == 200
        assert first["response"].json()["explain"]["method"] == "grad-cam"
        queue = client.get("/api/models").json()["explain"]["queue"]
        assert queue["rejected"] == 1 and queue["finished"] == 1


def test_waiting_explanations_run_in_turn_and_one_more_is_refused():
    async def scenario():
        queue = ExplainQueue(ServeLimits(max_explain=1, max_explain_pending=1))
        gate, order = threading.Event(), []

        def work(name):
            def run(cancel):
                gate.wait(HOLD_S)
                order.append(name)
                return name

            return run

        first = asyncio.ensure_future(queue.run(work("first")))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(queue.run(work("second")))
        await asyncio.sleep(0)
        assert (queue.running, queue.waiting) == (1, 1)
        with pytest.raises(ApiError) as refused:
            await queue.run(work("third"))
        gate.set()
        out = await asyncio.gather(first, second)
        queue.close()
        return refused.value, out, order

    refused, out, order = asyncio.run(scenario())
    assert refused.status == 503 and int(refused.headers["Retry-After"]) >= 1
    assert out == ["first", "second"] and order == ["first", "second"]


def test_a_wait_past_the_timeout_is_a_503_and_a_left_caller_stops_the_work():
    async def scenario():
        queue = ExplainQueue(ServeLimits(max_explain=1, max_explain_pending=1, timeout_s=0.01))
        gate, cancelled = threading.Event(), threading.Event()

        def held(cancel):
            gate.wait(HOLD_S)
            if cancel.is_set():
                cancelled.set()

        first = asyncio.ensure_future(queue.run(held))
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as late:
            await queue.run(lambda cancel: None)  # never gets a turn while the first is held
        assert queue.waiting == 0
        first.cancel()  # its client hung up
        with pytest.raises(asyncio.CancelledError):
            await first
        assert queue.running == 1  # the work, not the request, holds the turn
        gate.set()
        while queue.running:
            await asyncio.sleep(0.001)
        queue.close()
        return late.value, cancelled.is_set()

    late, cancelled = asyncio.run(scenario())
    assert late.status == 503 and "no turn within" in late.detail
    assert cancelled  # the work saw its caller leave


def test_an_explanation_covers_at_most_max_explain_tiles_in_bounded_passes(monkeypatch):
    predictor = Predictor.from_checkpoint("default")
    calls: list[int] = []
    real = predictor.grad_cam

    def counted(batch, **kwargs):
        calls.append(len(batch))
        return real(batch, **kwargs)

    monkeypatch.setattr(predictor, "grad_cam", counted)
    limits = ServeLimits(max_explain_tiles=16)
    with TestClient(create_app(predictor, limits=limits)) as client:
        small = client.post(
            "/api/predict?explain=true", files={"file": ("s.png", _png((200, 200)), "image/png")}
        ).json()  # 16 tiles: explained tile by tile
        assert small["explain"]["explains"] == "the whole image, tile by tile"
        assert calls == [16]
        calls.clear()
        large = client.post(
            "/api/predict?explain=true", files={"file": ("l.png", _png((400, 400)), "image/png")}
        ).json()  # 64 tiles: scored tile by tile, explained on the model's input
    assert large["tiles"]["count"] == 64
    assert calls == [1]
    assert large["explain"]["explains"].startswith("the model's input")
    assert "64 tiles" in large["explain"]["note"] and "limit of 16" in large["explain"]["note"]
    assert large["explain"]["tiles_png"] is not None  # the tile scores are still shown


def test_grad_cam_runs_in_passes_of_bounded_pixels():
    class Recorder:
        def __init__(self):
            self.rows = []

        def grad_cam(self, chunk, *, target_class, normalize):
            self.rows.append(len(chunk))
            return np.zeros(chunk.shape[:3], np.float32)

    model = Recorder()
    cams = explaining.chunked_grad_cam(model, np.zeros((256, 50, 50, 3), np.uint8), target=1)
    assert cams.shape == (256, 50, 50)
    assert max(model.rows) * 50 * 50 <= explaining.CHUNK_PIXELS and sum(model.rows) == 256
    stop = threading.Event()
    stop.set()
    assert (
        explaining.chunked_grad_cam(
            model, np.zeros((4, 224, 224, 3), np.uint8), target=1, cancel=stop
        )
        is None
    )


def test_a_turn_is_taken_on_arrival_and_held_for_the_whole_request():
    async def scenario():
        queue = ExplainQueue(ServeLimits(max_explain=1, max_explain_pending=0))
        async with queue.turn() as held:  # decoding and scoring would happen here
            with pytest.raises(ApiError) as refused:
                async with queue.turn():
                    pass
            assert queue.running == 1
            assert await held.run(lambda cancel: "explained") == "explained"
        assert queue.running == 0
        out = await queue.run(lambda cancel: "next")
        queue.close()
        return refused.value, out

    refused, out = asyncio.run(scenario())
    assert refused.status == 503 and "Retry-After" in refused.headers
    assert out == "next"
