"""``POST /api/predict/batch``: several files or zips, per-file results and per-file errors."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastpath.imaging import decode_image
from breastpath.serve.app import ServeLimits, create_app
from conftest import synthetic_patch


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _patch(seed: int, label: int = 1, size=(50, 50)) -> bytes:
    return _png(synthetic_patch(np.random.default_rng(seed), label, size=size))


def _zip(members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def _batch(client, files: list[tuple[str, bytes]]):
    return client.post(
        "/api/predict/batch", files=[("files", (name, data, "image/png")) for name, data in files]
    )


def _client_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["detail"]


def test_several_files_in_order(client, predictor):
    files = [(f"p{i}.png", _patch(i, label=i % 2)) for i in range(5)]
    response = _batch(client, files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] == {
        "files": 5,
        "ok": 5,
        "failed": 0,
        "cancer": sum(r["is_cancer"] for r in body["results"]),
        "not_assessed": 0,
        "ignored": 0,
    }
    assert [r["filename"] for r in body["results"]] == [name for name, _ in files]
    assert [r["index"] for r in body["results"]] == list(range(5))
    expected = predictor.predict_images([decode_image(data) for _, data in files])
    for result, prediction in zip(body["results"], expected, strict=True):
        assert result["ok"] is True
        assert result["probability"] == pytest.approx(prediction.probability, abs=1e-6)
        assert result["label"] == prediction.label
    assert body["threshold"] == round(predictor.threshold, 6)  # the API rounds to 6
    assert body["model"]["name"] == predictor.name


def test_bad_files_get_their_own_errors(client):
    big = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    files = [
        ("good.png", _patch(1)),
        ("notes.png", b"not an image at all\n" * 10),
        ("empty.png", b""),
        ("cut.png", _patch(2, size=(80, 80))[:300]),
        ("large.png", _png(big)),
    ]
    body = _batch(client, files).json()
    results = {r["filename"]: r for r in body["results"]}
    assert results["good.png"]["ok"] and results["large.png"]["ok"]
    assert results["large.png"]["tiles"]["count"] == 4  # 80x60 -> 2 x 2 tiles of 50
    assert results["notes.png"]["error"]["status"] == 415
    assert results["empty.png"]["error"]["status"] == 400
    assert results["cut.png"]["error"]["status"] == 400
    for name in ("notes.png", "empty.png", "cut.png"):
        assert results[name]["ok"] is False
        assert name in results[name]["error"]["detail"]
    assert body["summary"]["ok"] == 2 and body["summary"]["failed"] == 3


def test_zip_of_images(client, predictor):
    members = {
        "slides/a.png": _patch(3),
        "slides/b.png": _patch(4, label=0),
        "__MACOSX/slides/._a.png": b"resource fork",
        ".hidden.png": b"x",
        "slides/readme.txt": b"hello",
        "slides/broken.png": b"\x89PNG\r\n\x1a\nbroken",
    }
    body = _batch(client, [("set.zip", _zip(members))]).json()
    names = [r["filename"] for r in body["results"]]
    assert names == ["a.png", "b.png", ".hidden.png", "readme.txt", "broken.png"]
    assert body["summary"]["ignored"] == 1  # the __MACOSX resource fork
    ok = [r for r in body["results"] if r["ok"]]
    expected = predictor.predict_images([decode_image(members["slides/a.png"])])[0]
    assert ok[0]["probability"] == pytest.approx(expected.probability, abs=1e-6)
    errors = {r["filename"]: r["error"]["status"] for r in body["results"] if not r["ok"]}
    assert errors == {".hidden.png": 400, "readme.txt": 415, "broken.png": 415}


def test_zip_and_files_together(client):
    body = _batch(client, [("one.png", _patch(5)), ("more.zip", _zip({"two.png": _patch(6)}))])
    assert [r["filename"] for r in body.json()["results"]] == ["one.png", "two.png"]


def test_file_names_are_cleaned(client):
    body = _batch(client, [("../../etc/<script>.png", _patch(7))]).json()
    assert body["results"][0]["filename"] == "_script_.png"


def test_too_many_files(predictor):
    app = create_app(predictor, limits=ServeLimits(max_files=2))
    with TestClient(app, raise_server_exceptions=False) as small:
        files = [(f"p{i}.png", _patch(i)) for i in range(3)]
        assert "limit of 2" in _client_error(_batch(small, files), 413)
        archive = _zip({f"p{i}.png": data for i, (_, data) in enumerate(files)})
        assert "limit of 2" in _client_error(_batch(small, [("a.zip", archive)]), 413)
        two = _zip({"a.png": _patch(1), "b.png": _patch(2)})
        detail = _client_error(_batch(small, [("x.png", _patch(0)), ("two.zip", two)]), 413)
        assert "3 images" in detail


def test_zip_bombs_are_bounded(predictor):
    limits = ServeLimits(max_upload_bytes=50_000, max_batch_bytes=120_000)
    flat = _png(np.zeros((10, 10, 3), np.uint8)) + b"\0" * 60_000  # compresses to almost nothing
    with TestClient(create_app(predictor, limits=limits), raise_server_exceptions=False) as small:
        body = _batch(small, [("bomb.zip", _zip({"a.png": flat, "b.png": _patch(1)}))]).json()
        first = body["results"][0]
        assert first["ok"] is False and first["error"]["status"] == 413
        assert body["results"][1]["ok"] is True
        many = _zip({f"{i}.png": flat[:45_000] for i in range(4)})  # 180 kB expanded
        results = _batch(small, [("m.zip", many)]).json()["results"]
        assert [r["ok"] for r in results[:2]] == [True, True]  # 90 kB of the 120 kB budget
        for late in results[2:]:
            assert late["error"]["status"] == 413 and "per request" in late["error"]["detail"]


def test_bad_zips_and_requests(client):
    assert "zip" in _client_error(_batch(client, [("x.zip", b"PK\x03\x04 garbage")]), 400)
    assert "no files" in _client_error(_batch(client, [("e.zip", _zip({"d/": b""}))]), 400)
    _client_error(client.post("/api/predict/batch"), 422)
    response = client.post(
        "/api/predict", files={"file": ("set.zip", _zip({"a.png": _patch(1)}), "application/zip")}
    )
    assert "/api/predict/batch" in _client_error(response, 415)


def test_stored_zip_member_sizes_are_checked_while_reading(predictor):
    limits = ServeLimits(max_upload_bytes=2000)
    payload = _png(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    assert len(payload) > 2000
    archive = _zip({"big.png": payload}, compression=zipfile.ZIP_STORED)
    with TestClient(create_app(predictor, limits=limits), raise_server_exceptions=False) as small:
        response = _batch(small, [("a.zip", archive)])
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["error"]["status"] == 413
