"""A folder of good, odd and bad files: ``breastpath predict`` and ``breastpath prepare`` score
or cache every readable image, and skip and list every unreadable one, with its reason.

Odd but valid (converted, scored): 16-bit PNG, CMYK JPEG, palette PNG, RGBA PNG, grayscale JPEG.
Bad (skipped): corrupt PNG data, truncated JPEG, zero bytes, text named ``.png``, a PNG whose
header claims 50000 x 40000 pixels and one claiming 12000 x 10000 (Pillow's decompression-bomb
error and warning): both refused by size, before any pixel is decoded.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from breastpath.cli.main import main
from breastpath.config import DataConfig
from breastpath.data.cache import open_prepared
from breastpath.data.prepare import prepare
from conftest import make_idc_tree, synthetic_patch


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _patch(seed: int) -> np.ndarray:
    return synthetic_patch(np.random.default_rng(seed), seed % 2, size=(50, 50))


def _sixteen_bit(seed: int) -> bytes:
    return _encode(Image.fromarray(_patch(seed)[..., 0].astype(np.uint16) * 257), "PNG")


def _cmyk_jpeg(seed: int) -> bytes:
    return _encode(Image.fromarray(_patch(seed)).convert("CMYK"), "JPEG")


def _palette(seed: int) -> bytes:
    return _encode(Image.fromarray(_patch(seed)).quantize(colors=64), "PNG")


def _rgba(seed: int) -> bytes:
    rgba = np.dstack([_patch(seed), np.full((50, 50), 200, np.uint8)])
    return _encode(Image.fromarray(rgba, "RGBA"), "PNG")


def _gray_jpeg(seed: int) -> bytes:
    return _encode(Image.fromarray(_patch(seed)).convert("L"), "JPEG")


def _corrupt_png(seed: int) -> bytes:
    data = bytearray(_encode(Image.fromarray(_patch(seed)), "PNG"))
    start = data.index(b"IDAT") + 4
    for offset in range(20, 60):  # scramble compressed pixel data (the chunk CRC no longer fits)
        data[start + offset] ^= 0x5A
    return bytes(data)


def _truncated_jpeg(seed: int) -> bytes:
    data = _encode(Image.fromarray(_patch(seed)), "JPEG")
    return data[: len(data) // 2]


def _zero_bytes(_seed: int) -> bytes:
    return b""


def _text(_seed: int) -> bytes:
    return b"patient notes, not an image\n" * 4


def _header_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` pixels."""
    data = bytearray(_encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _bomb(_seed: int) -> bytes:  # 2 gigapixels: Pillow's DecompressionBombError
    return _header_claiming(50_000, 40_000)


def _oversized(_seed: int) -> bytes:  # 120 megapixels: Pillow's warning, an error to us
    return _header_claiming(12_000, 10_000)


ODD: dict[str, tuple[str, Callable[[int], bytes]]] = {
    "16-bit PNG": (".png", _sixteen_bit),
    "CMYK JPEG": (".jpg", _cmyk_jpeg),
    "palette PNG": (".png", _palette),
    "RGBA PNG": (".png", _rgba),
    "grayscale JPEG": (".jpeg", _gray_jpeg),
}
BAD: dict[str, tuple[str, Callable[[int], bytes]]] = {
    "corrupt PNG": (".png", _corrupt_png),
    "truncated JPEG": (".jpg", _truncated_jpeg),
    "zero bytes": (".png", _zero_bytes),
    "text named .png": (".png", _text),
    "decompression bomb": (".png", _bomb),
    "oversized header": (".png", _oversized),
}


def _name(kind: str) -> str:
    return kind.replace(" ", "_").replace(".", "")


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mixed")
    for i in range(3):
        (folder / f"good_{i}.png").write_bytes(_encode(Image.fromarray(_patch(i)), "PNG"))
    for seed, (kind, (suffix, make)) in enumerate({**ODD, **BAD}.items(), start=10):
        (folder / f"{_name(kind)}{suffix}").write_bytes(make(seed))
    return folder


def test_predict_scores_the_readable_and_lists_the_rest(mixed_folder, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    capsys.readouterr()
    code = main(["predict", "--checkpoint", "default", str(mixed_folder), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    total = 3 + len(ODD) + len(BAD)
    assert f"{len(BAD)} of {total} file(s) could not be scored" in err
    with open(out, newline="") as handle:
        rows = {Path(r["path"]).stem: r for r in csv.DictReader(handle)}
    assert len(rows) == total
    for stem in [f"good_{i}" for i in range(3)] + [_name(k) for k in ODD]:
        assert rows[stem]["error"] == "", rows[stem]
        assert 0.0 <= float(rows[stem]["probability"]) <= 1.0
    for kind in BAD:
        row = rows[_name(kind)]
        assert row["probability"] == "" and _name(kind) in row["error"], row
    for kind in ("decompression bomb", "oversized header"):
        error = rows[_name(kind)]["error"]
        assert "too large to decode" in error and "not a readable image" not in error


def test_prepare_caches_the_readable_and_lists_the_rest(tmp_path):
    tree = make_idc_tree(tmp_path / "IDC", patients=4, per_class=3)
    expected_bad = []
    for seed, (kind, (_suffix, make)) in enumerate({**ODD, **BAD}.items(), start=10):
        patient, label = str(10000 + seed % 4), seed % 2
        path = tree / patient / str(label) / f"{patient}_idx5_x{seed}_y9_class{label}.png"
        path.write_bytes(make(seed))  # IDC names are .png, whatever the content
        if kind in BAD:
            expected_bad.append(str(path))
    total = len(list(tree.rglob("*.png")))

    summary = prepare([tree], tmp_path / "out", config=DataConfig(test_frac=0.25, val_frac=0.34))
    skipped = {item["path"]: item["reason"] for item in summary["skipped"]}
    assert sorted(skipped) == sorted(expected_bad)
    assert all(reason for reason in skipped.values())
    assert summary["images"] == total - len(BAD)
    assert any(f"{len(BAD)} unreadable file(s) were skipped" in n for n in summary["notes"])
    data = open_prepared(tmp_path / "out")
    assert len(data.labels) == total - len(BAD)
    stored = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["path"] for s in stored["skipped"]] == [s["path"] for s in summary["skipped"]]
