"""The attacks of the serve attack suite that are fast enough for every test run (in process).

Each test sends what an attacker sent and checks the answer is a 4xx or a per-file error, never
a 500, and that the work done stays bounded. The heavy versions (real server, RSS, event-loop
stalls, fairness under load) are in ``benchmarks/bench_abuse.py``.
"""

from __future__ import annotations

import io
import struct
import threading
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastpath.data.transforms import fit_to_size
from breastpath.serve.app import ServeLimits, create_app
from conftest import synthetic_patch


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def thin_png(width: int, height: int = 1) -> bytes:
    """A valid grey PNG of ``width x height`` zeros, compressed to almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = (b"\0" + b"\0" * width) * height  # filter byte + pixels per row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def _zip(members: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def _encrypted(archive: bytes) -> bytes:
    """The same zip with the 'encrypted' flag (bit 0) set on every member, as a real encrypted
    zip has it in both the local and the central headers."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (found := data.find(signature, start)) >= 0:
            flags = struct.unpack_from("<H", data, found + offset)[0]
            struct.pack_into("<H", data, found + offset, flags | 0x1)
            start = found + 4
    return bytes(data)


PATCH = _png(synthetic_patch(np.random.default_rng(0), 1))


def _batch(client, files):
    return client.post(
        "/api/predict/batch", files=[("files", (name, data, "image/png")) for name, data in files]
    )


def _post(client, data: bytes, name: str = "x.png"):
    return client.post("/api/predict", files={"file": (name, data, "image/png")})


def _results(response) -> dict[str, dict]:
    assert response.status_code == 200, response.text
    return {r["filename"]: r for r in response.json()["results"]}


@pytest.fixture(scope="module")
def small_client(predictor):
    """Low per-request budgets, so the budget attacks are cheap."""
    limits = ServeLimits(
        max_upload_bytes=200_000,
        max_batch_bytes=300_000,
        max_request_pixels=3 * 100 * 100,
        max_request_tiles=6,
    )
    with TestClient(create_app(predictor, limits=limits), raise_server_exceptions=False) as c:
        yield c


# -- 1. very thin images ----------------------------------------------------------------------


@pytest.mark.parametrize("width", [60_000_000, 1_000_000, 100_000])
def test_thin_images_are_refused_from_their_header(client, width):
    data = thin_png(width)
    assert len(data) < 120_000
    response = _post(client, data, name="thin.png")
    assert response.status_code == 413, response.text
    assert "elongated" in response.json()["detail"]


def test_small_odd_shapes_are_not_refused(client):
    for shape in ((1, 101), (3, 4096), (4096, 1)):
        response = _post(client, _png(np.full((*shape, 3), 180, np.uint8)), name="odd.png")
        assert response.status_code == 200, (shape, response.text)


def test_an_elongated_image_within_the_limit_is_scored_with_bounded_work(client):
    response = _post(client, _png(np.full((50, 5000, 3), 180, np.uint8)), name="strip.png")
    assert response.status_code == 200, response.text
    assert response.json()["tiles"]["count"] == 100


def test_resizing_a_thin_image_makes_no_huge_intermediate():
    tracemalloc.start()
    try:
        out, action = fit_to_size(np.zeros((1, 1_000_000, 3), np.uint8), (50, 50))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (50, 50, 3) and action == "resized"
    assert peak < 5_000_000  # the input is 3 MB; the old intermediate was 7.5 GB


# -- 2, 3. encrypted members, bzip2 and LZMA bombs ----------------------------------------------


def test_an_encrypted_member_is_a_per_file_error(client):
    archive = _encrypted(_zip({"secret.png": PATCH, "open.png": PATCH}))
    results = _results(_batch(client, [("locked.zip", archive)]))
    for name in ("secret.png", "open.png"):
        assert results[name]["error"]["status"] == 415
        assert "encrypted" in results[name]["error"]["detail"]


@pytest.mark.parametrize(
    ("method", "says"), [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "LZMA")]
)
def test_bzip2_and_lzma_members_are_not_decompressed(client, method, says, monkeypatch):
    bomb = _zip({"bomb.png": b"\0" * 20_000_000}, compression=method)
    assert len(bomb) < 20_000
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: opened.append(a))
    results = _results(_batch(client, [("bomb.zip", bomb), ("ok.png", PATCH)]))
    assert results["bomb.png"]["error"]["status"] == 415
    assert says in results["bomb.png"]["error"]["detail"]
    assert results["ok.png"]["ok"] is True
    assert opened == []  # not even opened


# -- 4, 5. per-request budgets ------------------------------------------------------------------


def test_the_pixel_budget_is_per_request(small_client):
    image = _png(np.full((100, 100, 3), 180, np.uint8))
    files = [(f"{i}.png", image) for i in range(5)]
    results = list(_results(_batch(small_client, files)).values())
    assert [r["ok"] for r in results] == [True, True, True, False, False]
    for late in results[3:]:
        assert late["error"]["status"] == 413 and "not decoded" in late["error"]["detail"]
    # a new request has its own budget
    assert _results(_batch(small_client, files[:3]))["0.png"]["ok"] is True


def test_the_tile_budget_is_per_request(small_client):
    image = _png(np.full((100, 100, 3), 180, np.uint8))  # 4 tiles of 50x50
    results = list(_results(_batch(small_client, [("a.png", image), ("b.png", image)])).values())
    assert results[0]["tiles"]["count"] == 4
    assert results[1]["tiles"] is None and "left of its limit of 6" in results[1]["note"]


def test_the_expansion_budget_is_per_request_not_per_zip(small_client):
    flat = _png(np.zeros((10, 10, 3), np.uint8)) + b"\0" * 90_000  # ~90 kB, deflates to ~100 B
    zips = [(f"z{i}.zip", _zip({f"{i}.png": flat})) for i in range(4)]
    assert sum(len(data) for _, data in zips) < 5_000
    results = list(_results(_batch(small_client, zips)).values())
    assert [r["ok"] for r in results] == [True, True, True, False]  # 300 kB for all four zips
    assert "per request" in results[3]["error"]["detail"]


def _batch_peak(client, monkeypatch, images: list[bytes]) -> int:
    """Peak traced memory of scoring a batch, above what was held when scoring began."""
    from breastpath.serve import batch

    scoring = batch.predict_entries
    growth: list[int] = []

    async def measured(*args, **kwargs):  # from the uploads read to the results made
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            return await scoring(*args, **kwargs)
        finally:
            growth.append(tracemalloc.get_traced_memory()[1] - before)

    monkeypatch.setattr(batch, "predict_entries", measured)
    tracemalloc.start()
    try:
        response = _batch(client, [(f"{i}.png", data) for i, data in enumerate(images)])
    finally:
        tracemalloc.stop()
        monkeypatch.setattr(batch, "predict_entries", scoring)
    assert all(r["ok"] for r in _results(response).values())
    return growth[0]


def test_a_batch_holds_one_full_size_image_at_a_time(client, monkeypatch):
    images = [
        _png(np.random.default_rng(i).integers(0, 255, (1000, 1000, 3), dtype=np.uint8))
        for i in range(8)
    ]
    one = _batch_peak(client, monkeypatch, images[:1])
    eight = _batch_peak(client, monkeypatch, images)
    # each image is 3 MB of pixels and 3 MB of tiles: holding all eight would add 42 MB
    assert eight < one + 15_000_000, (one, eight)


# -- 6. blocking work off the event loop ---------------------------------------------------------


def test_zips_are_opened_and_read_in_worker_threads(client, monkeypatch):
    from breastpath.serve import batch, uploads

    threads: dict[str, str] = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            threads[name] = threading.current_thread().name
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(batch, "open_zip", spy("open", uploads.open_zip))
    monkeypatch.setattr(batch, "read_member", spy("read", uploads.read_member))
    loop_thread: list[str] = []

    @client.app.get("/api/_thread")
    async def where() -> dict:  # the event loop's own thread
        loop_thread.append(threading.current_thread().name)
        return {}

    client.get("/api/_thread")
    assert _results(_batch(client, [("a.zip", _zip({"a.png": PATCH}))]))["a.png"]["ok"]
    assert set(threads) == {"open", "read"}
    assert loop_thread and loop_thread[0] not in threads.values()


# -- 10. zip members never dropped in silence ----------------------------------------------------


def test_unsafe_and_hidden_members_get_a_result_line_each(client):
    members = {
        "../escape.png": PATCH,
        "a/../../up.png": PATCH,
        "/abs.png": PATCH,
        ".hidden.png": PATCH,
        "dir/.also.png": PATCH,
        "fine.png": PATCH,
        "__MACOSX/._fine.png": b"fork",
    }
    body = _batch(client, [("m.zip", _zip(members))]).json()
    lines = {r["filename"]: r for r in body["results"]}
    assert lines["fine.png"]["ok"] is True
    assert body["summary"] == {**body["summary"], "files": 6, "failed": 5, "ignored": 1}
    unsafe = [r for r in body["results"] if "unsafe path" in r.get("error", {}).get("detail", "")]
    hidden = [r for r in body["results"] if "hidden file" in r.get("error", {}).get("detail", "")]
    assert len(unsafe) == 3 and len(hidden) == 2
    assert all(r["error"]["status"] == 400 for r in unsafe + hidden)


# -- 11. image formats -------------------------------------------------------------------------


def _other_formats() -> list[tuple[str, bytes]]:
    rgb = Image.new("RGB", (32, 32), (200, 90, 160))
    out = [
        ("x.gif", _encode(rgb, "GIF")),
        ("x.webp", _encode(rgb, "WEBP")),
        ("x.ppm", _encode(rgb, "PPM")),
        ("x.ico", _encode(rgb, "ICO")),
        ("x.tga", _encode(rgb, "TGA")),
        ("x.pcx", _encode(rgb, "PCX")),
        ("x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n"),
    ]
    return out


@pytest.mark.parametrize(("name", "data"), _other_formats(), ids=lambda v: str(v)[:8])
def test_formats_outside_the_allowlist_are_refused(client, name, data):
    response = _post(client, data, name=name.replace("x.", "image.") + ".png")
    assert response.status_code == 415, response.text
    assert "not a readable image" in response.json()["detail"]


@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_multi_frame_images_say_only_the_first_frame_was_scored(client, fmt):
    frames = [Image.new("RGB", (50, 50), c) for c in ((200, 90, 160), (20, 20, 20), (9, 9, 9))]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    body = _post(client, data, name=f"stack.{fmt.lower()}").json()
    assert "3 frames: only the first frame was scored" in body["note"]
    single = _post(client, _encode(frames[0], fmt), name="one.png").json()
    assert single["probability"] == pytest.approx(body["probability"], abs=1e-6)
    assert "note" not in single


# -- minor ---------------------------------------------------------------------------------------


def test_422_does_not_echo_huge_input(client):
    # a 1 MB text field where the file should be: FastAPI's 422 quoted it back in full
    response = client.post(
        "/api/predict", data={"file": "y" * 1_000_000}, files={"other": ("a.png", PATCH)}
    )
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < 2_000
    assert "1000000 characters" in response.text


def test_bidi_and_invisible_characters_are_not_echoed(client):
    name = "report\u202egnp.exe\u200b\u2066.png"
    body = _batch(client, [(name, PATCH)]).json()
    echoed = body["results"][0]["filename"]
    assert echoed == "report_gnp.exe__.png"
    assert not any(c in echoed for c in "\u202e\u200b\u2066")


def test_no_cdn_page_and_the_spec_is_local(client):
    docs = client.get("/docs")  # rendered here from the spec (issue 32): no Swagger UI, no CDN
    assert docs.status_code == 200 and "<script" not in docs.text and "cdn" not in docs.text
    assert "default-src 'self'" in docs.headers["content-security-policy"]
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "breastpath"


def test_head_on_health(client):
    response = client.head("/api/health")
    assert response.status_code == 200 and response.content == b""
