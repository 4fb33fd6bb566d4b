"""Limits and errors: streamed bodies, decompression bombs, busy and slow model, unexpected errors.

Every answer is JSON with a ``detail``; bad input is a 4xx, never a 500 or a stack trace.
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastpath.errors import ConfigError
from breastpath.serve.app import ServeLimits, create_app
from breastpath.serve.engine import InferenceEngine
from breastpath.serve.errors import ApiError


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` RGB pixels but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


PATCH = _png(np.full((50, 50, 3), 180, np.uint8))


def _post(client, data: bytes, name: str = "x.png", path: str = "/api/predict"):
    return client.post(path, files={"file": (name, data, "image/png")})


def _json_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "Traceback" not in detail
    return detail


# -- bad images -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "says"),
    [(9_000, "9000x9000 pixels, more than the limit"), (100_000, "too large to decode")],
)
def test_decompression_bomb_is_refused_before_decoding(client, side, says):
    bomb = _png_header_only(side, side)
    assert len(bomb) < 200
    detail = _json_error(_post(client, bomb, name="bomb.png"), 413)
    assert "bomb.png" in detail and says in detail


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("float.tif", _encode(Image.new("F", (8, 8), 0.5), "TIFF"), 415),
        ("text.png", b"%PDF-1.4 definitely not a png\n" * 5, 415),
        ("cut.jpg", _encode(Image.new("RGB", (64, 64), (200, 90, 160)), "JPEG")[:200], 400),
        ("empty.png", b"", 400),
    ],
)
def test_bad_images_are_client_errors(client, name, data, status):
    assert name in _json_error(_post(client, data, name=name), status)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (50, 50), 128),
        Image.new("RGBA", (50, 50), (200, 100, 150, 128)),
        Image.new("I;16", (50, 50), 30000),
        Image.new("P", (50, 50), 3),
        Image.new("CMYK", (50, 50), (10, 80, 20, 5)),
    ],
    ids=lambda image: image.mode,
)
def test_other_modes_are_converted(client, image):
    fmt = "JPEG" if image.mode == "CMYK" else "PNG"
    response = _post(client, _encode(image, fmt), name=f"m.{fmt.lower()}")
    assert response.status_code == 200, response.text


# -- body limits ----------------------------------------------------------------------------------


def test_streamed_body_over_the_limit(predictor):
    app = create_app(predictor, limits=ServeLimits(max_upload_bytes=1000))

    def chunks():
        yield b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(100):
            yield b"x" * 10_000

    with TestClient(app, raise_server_exceptions=False) as small:
        response = small.post(
            "/api/predict",
            content=chunks(),  # no Content-Length: chunked transfer
            headers={"content-type": "multipart/form-data; boundary=zzz"},
        )
        assert "1000" in _json_error(response, 413)
        assert small.get("/api/health").status_code == 200


def test_batch_body_limit(predictor):
    limits = ServeLimits(max_upload_bytes=1000, max_batch_bytes=5000)
    with TestClient(create_app(predictor, limits=limits), raise_server_exceptions=False) as small:
        response = small.post(
            "/api/predict/batch",
            content=b"x" * 100_000,
            headers={"content-type": "multipart/form-data; boundary=zzz"},
        )
        assert "5000" in _json_error(response, 413)


def test_limits_are_validated():
    with pytest.raises(ConfigError, match="max_files"):
        ServeLimits(max_files=0)
    with pytest.raises(ConfigError, match="timeout_s"):
        ServeLimits(timeout_s=-1)


# -- the model: slow, busy, broken ----------------------------------------------------------------


class SlowPredictor:
    """Stands in for a Predictor: records batch sizes, optionally waits or fails."""

    class_names = ("a", "b")

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail, self.calls = delay, fail, []

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        first = batch[:, 0, 0, 0].astype(np.float64) / 255.0  # identifies each image
        return np.stack([1.0 - first, first], axis=1)


def test_concurrent_requests_are_batched_and_answered_in_order():
    fake = SlowPredictor(delay=0.05)
    engine = InferenceEngine(fake, ServeLimits(max_batch_size=16))

    async def scenario():
        batches = [np.full((1, 4, 4, 3), i, np.uint8) for i in range(20)]
        results = await asyncio.gather(*(engine.predict_proba(b) for b in batches))
        await engine.stop()
        return results

    results = asyncio.run(scenario())
    assert [round(r[0, 1] * 255) for r in results] == list(range(20))
    assert sum(fake.calls) == 20 and len(fake.calls) < 20
    assert max(fake.calls) <= 16
    assert engine.stats["images"] == 20


def test_busy_and_timeout():
    fake = SlowPredictor(delay=0.3)
    engine = InferenceEngine(fake, ServeLimits(max_pending=2, timeout_s=0.1, max_batch_size=1))

    async def scenario():
        one = np.zeros((1, 4, 4, 3), np.uint8)
        return await asyncio.gather(
            *(engine.predict_proba(one) for _ in range(5)), return_exceptions=True
        )

    outcomes = asyncio.run(scenario())
    statuses = sorted(o.status for o in outcomes if isinstance(o, ApiError))
    assert 503 in statuses and 504 in statuses
    assert engine.stats["rejected"] >= 1 and engine.stats["timeouts"] >= 1


def test_http_timeout_and_model_failure(predictor, monkeypatch):
    slow = threading.Event()

    def stalled(batch):
        slow.wait(2.0)
        return np.zeros((len(batch), 2))

    app = create_app(predictor, limits=ServeLimits(timeout_s=0.2))
    with TestClient(app, raise_server_exceptions=False) as small:
        monkeypatch.setattr(predictor, "predict_proba", stalled)
        assert "did not answer" in _json_error(_post(small, PATCH), 504)
        slow.set()

        def broken(batch):
            raise RuntimeError("secret internal state")

        monkeypatch.setattr(predictor, "predict_proba", broken)
        response = _post(small, PATCH)
        assert response.status_code == 500
        assert response.json() == {"detail": "internal server error"}


def test_malformed_multipart_is_a_client_error(client):
    response = client.post(
        "/api/predict",
        content=b"garbage without boundaries",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]
    response = client.post("/api/predict", content=b"{}", headers={"content-type": "text/plain"})
    assert 400 <= response.status_code < 500 and response.json()["detail"]
