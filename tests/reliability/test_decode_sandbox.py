"""Issue 29, second attack round: untrusted images decoded in a sandbox.

Each test is one defect of the issue: the decode budget held until the decode really ends
(1), nothing opened on the event loop and costly structures refused before decoding (2), any
decoder failure a 4xx or an error row (3, 4), a zip's directory checked before it is parsed (6)
and every decompressed byte counted (7). Payloads are generated here, small where a small one
shows the same cost curve.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import struct
import threading
import zipfile
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from breastpath.cli.main import main
from breastpath.errors import DecodeLimitError, InvalidImageError
from breastpath.imaging import decode_image
from breastpath.sandbox import DecodeSandbox
from breastpath.serve.app import ServeLimits, create_app
from breastpath.serve.service import PredictionService
from breastpath.serve.uploads import Upload
from conftest import synthetic_patch

MIB = 1 << 20


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zeros_png(width: int, height: int, *, text_chunks: int = 0) -> bytes:
    """A grey PNG of zeros (tiny on disk, ``width * height`` pixels decoded), with
    ``text_chunks`` compressed text chunks before its pixels."""
    rows = (b"\0" * (width + 1)) * height
    text = b"".join(
        _chunk(b"zTXt", b"k%d\0\0" % i + zlib.compress(b"x" * 1000)) for i in range(text_chunks)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + text
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


PATCH = _encode(Image.fromarray(synthetic_patch(np.random.default_rng(0), 1)), "PNG")


def small_tiff() -> bytes:
    """A 2-page 4x4 TIFF: the seed of the fuzzed TIFFs."""
    page = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    return _encode(page, "TIFF", save_all=True, append_images=[page])


def fuzzed_tiff(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    data = bytearray(small_tiff())
    for _ in range(rng.integers(1, 4)):
        data[rng.integers(0, len(data))] = rng.integers(0, 256)
    return bytes(data)


#: Seeds whose fuzzed TIFF made Pillow raise TypeError (31, 43) or KeyError (37, 85), which
#: escaped the decoder's error handling before issue 29 (HTTP 500, CLI traceback).
ESCAPING = (31, 37, 43, 85)


def tiff_pages(pages: int) -> bytes:
    one = Image.new("RGB", (1, 1), (200, 120, 160))
    return _encode(one, "TIFF", save_all=True, append_images=[one] * (pages - 1))


def tiff_claiming_strips(count: int) -> bytes:
    """A 1x1 TIFF whose StripOffsets/StripByteCounts tags say ``count`` values."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "TIFF"))
    (first,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, first)
    for entry in range(first + 2, first + 2 + 12 * entries, 12):
        if struct.unpack_from("<H", data, entry)[0] in (273, 279):
            struct.pack_into("<I", data, entry + 4, count)
    return bytes(data)


def jpeg_with_comments(count: int) -> bytes:
    data = _encode(Image.new("RGB", (16, 16), (200, 120, 160)), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x03x" * count + data[2:]


def jpeg_with_repeated_scan(repeats: int) -> bytes:
    """A progressive JPEG whose last scan is repeated ``repeats`` times (each repeat costs a
    pass over the whole image)."""
    data = _encode(Image.new("RGB", (64, 64), (200, 120, 160)), "JPEG", progressive=True)
    last = data.rfind(b"\xff\xda")
    scan = data[last:-2]
    return data[:-2] + scan * repeats + data[-2:]


@pytest.fixture(scope="module")
def sandbox():
    with DecodeSandbox(workers=1) as box:
        yield box


# -- 1. the decode budget is held until the decode has ended ----------------------------------


def test_a_hang_up_keeps_the_decode_budget_until_the_decode_ends(predictor):
    service = PredictionService(predictor, ServeLimits())
    started, release = threading.Event(), threading.Event()
    cancels: list[bool] = []

    def slow_decode(upload, *, tiles_left=None, cancel=None):
        started.set()
        release.wait(30)
        cancels.append(cancel is not None and cancel.is_set())
        raise InvalidImageError("stopped")

    service.decode = slow_decode  # type: ignore[method-assign]
    upload = Upload("big.png", zeros_png(2000, 1000))

    async def scenario() -> tuple[int, int]:
        task = asyncio.ensure_future(service.decode_async(upload))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()  # the client hung up
        with pytest.raises(asyncio.CancelledError):
            await task
        held_after_hang_up = service.decode_gate.in_use
        release.set()
        while service.decode_gate.in_use:
            await asyncio.sleep(0.01)
        return held_after_hang_up, service.decode_gate.in_use

    held, after = asyncio.run(scenario())
    assert held == 2000 * 1000  # still held: the decode thread had not ended
    assert after == 0
    assert cancels == [True]  # and the decode was told to stop


def test_cancelling_a_decode_stops_its_worker(sandbox):
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    results = sandbox.decode_many([zeros_png(8000, 8000), PATCH], cancel=cancel)
    timer.join()
    assert isinstance(results[0], InvalidImageError)
    assert results[1].pixels.shape == (50, 50, 3)  # inline, unaffected


# -- 2. slow-to-open images: refused before decoding, never opened on the event loop ----------


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (lambda: zeros_png(50, 50, text_chunks=200), "PNG text/metadata chunks"),
        (lambda: tiff_pages(200), "TIFF pages"),
        (lambda: tiff_claiming_strips(2_500_000), "TIFF strips or tiles"),
        (lambda: jpeg_with_comments(5_000), "JPEG marker segments"),
        (lambda: jpeg_with_repeated_scan(200), "JPEG scans"),
    ],
    ids=["png-text", "tiff-pages", "tiff-strips", "jpeg-comments", "jpeg-scans"],
)
def test_costly_structures_are_refused_before_decoding(client, payload, words):
    data = payload()
    with pytest.raises(InvalidImageError, match=words):
        decode_image(data)
    response = client.post("/api/predict", files={"file": ("x.img", data, "image/png")})
    assert response.status_code == 413, response.text
    assert words in response.json()["detail"]


def test_large_uploads_are_not_opened_on_the_event_loop(predictor, monkeypatch):
    """Pillow is never called on the event loop's thread for an upload past the inline bound
    (before: its header was read there, and a PNG of 19,000 text chunks froze every client)."""
    loop_thread = threading.get_ident()
    opened_on_loop: list[str] = []
    real_open = Image.open

    def spy(*args, **kwargs):
        if threading.get_ident() == loop_thread:
            opened_on_loop.append("Image.open")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    payload = zeros_png(400, 300, text_chunks=60)  # past the inline bound, under the limits

    async def scenario() -> tuple[int, list[str]]:
        app = create_app(predictor)
        order: list[str] = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

                async def slow() -> int:
                    files = {"file": ("big.png", zeros_png(8000, 8000), "image/png")}
                    response = await http.post("/api/predict", files=files)
                    order.append("slow")
                    return response.status_code

                async def health() -> None:
                    await asyncio.sleep(0.05)
                    await http.get("/api/health")
                    order.append("health")

                statuses = await asyncio.gather(slow(), health())
                files = {"file": ("text.png", payload, "image/png")}
                response = await http.post("/api/predict", files=files)
                assert response.status_code == 200, response.text
        return statuses[0], order

    status, order = asyncio.run(scenario())
    assert status == 200
    assert order == ["health", "slow"]  # the loop answered while the 8000x8000 image decoded
    assert opened_on_loop == []


# -- 3. any decoder failure is a bad image: 4xx, and a batch keeps its good results -----------


def test_fuzzed_tiffs_raise_only_invalid_image_error():
    for seed in range(200):
        with contextlib.suppress(InvalidImageError):  # anything else fails the test
            decode_image(fuzzed_tiff(seed))


@pytest.mark.parametrize("seed", ESCAPING)
def test_fuzzed_tiffs_that_escaped_are_a_4xx(client, seed):
    response = client.post(
        "/api/predict", files={"file": ("f.tif", fuzzed_tiff(seed), "image/tiff")}
    )
    assert 400 <= response.status_code < 500, response.text


def test_a_bad_file_in_a_batch_costs_only_its_own_line(client):
    files = [("good.png", PATCH)] + [(f"bad{s}.tif", fuzzed_tiff(s)) for s in ESCAPING]
    response = client.post(
        "/api/predict/batch", files=[("files", (n, d, "image/png")) for n, d in files]
    )
    assert response.status_code == 200, response.text
    results = {r["filename"]: r for r in response.json()["results"]}
    assert results["good.png"]["ok"]
    for seed in ESCAPING:
        line = results[f"bad{seed}.tif"]
        assert not line["ok"] and 400 <= line["error"]["status"] < 500


# -- 4. the CLI keeps everything but the bad files --------------------------------------------


def test_predict_writes_error_rows_for_files_that_escaped(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.png").write_bytes(PATCH)
    for seed in ESCAPING:
        (folder / f"bad{seed}.tif").write_bytes(fuzzed_tiff(seed))
    out = tmp_path / "preds.csv"
    assert main(["predict", str(folder), "--out", str(out)]) == 0
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader(out.open())}
    assert rows["good.png"]["error"] == "" and rows["good.png"]["probability"]
    assert all(rows[f"bad{s}.tif"]["error"] for s in ESCAPING)


def test_prepare_skips_files_that_escaped_and_caches_the_rest(tmp_path):
    from conftest import make_idc_tree

    tree = make_idc_tree(tmp_path / "IDC", patients=4, per_class=3)
    bad = sorted(tree.rglob("*.png"))[0]
    bad.write_bytes(fuzzed_tiff(ESCAPING[0]))
    out = tmp_path / "prepared"
    assert main(["prepare", str(tree), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["path"] for s in summary["skipped"]] == [str(bad)]


# -- the sandbox's limits: a worker past one is killed and replaced ---------------------------


def test_a_worker_past_its_wall_time_is_killed_and_replaced():
    with DecodeSandbox(workers=1, wall_seconds=0.2) as box:
        first, second = box.decode_many([zeros_png(8000, 8000), zeros_png(300, 300)])
        assert isinstance(first, DecodeLimitError) and "wall time" in str(first)
        assert second.pixels.shape == (300, 300, 3)
        assert box.stats["killed"] == 1 and box.stats["started"] == 2


def test_a_worker_past_its_memory_is_refused_and_kept():
    # 300 MiB: an idle worker's address space is about 120 MiB, and an 8000² grey PNG needs
    # its 64 MB of grey and 192 MB of RGB at once (decoded by strips; 400 MiB is enough now)
    with DecodeSandbox(workers=1, memory_bytes=300 * MIB) as box:
        first, second = box.decode_many([zeros_png(8000, 8000), zeros_png(300, 300)])
        assert isinstance(first, DecodeLimitError) and "300 MiB of memory" in str(first)
        assert second.pixels.shape == (300, 300, 3)


def test_a_limit_is_a_413_naming_it(predictor):
    app = create_app(predictor)
    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.service.sandbox = DecodeSandbox(workers=1, memory_bytes=300 * MIB)
        response = client.post(
            "/api/predict", files={"file": ("big.png", zeros_png(8000, 8000), "image/png")}
        )
        app.state.service.sandbox.close()
    assert response.status_code == 413, response.text
    assert "MiB of memory" in response.json()["detail"]


# -- 6 and 7. zips: the directory checked before parsing; every decompressed byte counted -----


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_directory_of_many_entries_is_refused_before_it_is_parsed(client, monkeypatch):
    archive = _zip({f"d/{i}.png": b"" for i in range(2000)})
    from breastpath.serve import uploads

    parsed: list[int] = []
    real = uploads.zipfile.ZipFile
    monkeypatch.setattr(
        uploads.zipfile, "ZipFile", lambda *a, **k: parsed.append(1) or real(*a, **k)
    )
    response = client.post(
        "/api/predict/batch", files=[("files", ("many.zip", archive, "application/zip"))]
    )
    assert response.status_code == 413, response.text
    assert "lists 2000 entries" in response.json()["detail"]
    assert parsed == []


def test_every_decompressed_byte_counts_and_oversize_members_are_not_decompressed(predictor):
    limits = ServeLimits(max_upload_bytes=2 * MIB, max_batch_bytes=3 * MIB)
    archive = _zip(
        {
            "huge.png": b"\0" * (5 * MIB),  # declares more than an upload may be
            "a.png": b"\0" * (2 * MIB - 10),
            "b.png": b"\0" * (2 * MIB - 10),  # only 1 MiB of the budget left for it
            "c.png": PATCH,
        }
    )
    with TestClient(create_app(predictor, limits=limits), raise_server_exceptions=False) as c:
        response = c.post(
            "/api/predict/batch", files=[("files", ("z.zip", archive, "application/zip"))]
        )
    assert response.status_code == 200, response.text
    body = response.json()
    lines = {r["filename"]: r for r in body["results"]}
    assert "not decompressed" in lines["huge.png"]["error"]["detail"]
    assert lines["b.png"]["error"]["status"] == 413
    assert body["used"]["bytes"] == limits.max_batch_bytes  # b's partial read counted
    assert lines["c.png"]["error"]["status"] == 413  # nothing left: not read
