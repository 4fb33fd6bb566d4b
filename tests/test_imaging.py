"""``decode_image``: every mode we accept comes out as (H, W, 3) uint8; bad input is named."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from breastpath.errors import InvalidImageError
from breastpath.imaging import decode_image, is_image_file


def _rgb(height: int = 12, width: int = 17, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _write(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def _check_rgb(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8
    assert array.shape == (*shape, 3)
    assert array.flags.c_contiguous


# -- accepted modes ------------------------------------------------------------------------------


def test_rgb_png_roundtrip_is_exact(tmp_path):
    pixels = _rgb()
    path = _write(tmp_path / "patch.png", Image.fromarray(pixels))
    decoded = decode_image(path)
    _check_rgb(decoded, pixels.shape[:2])
    np.testing.assert_array_equal(decoded, pixels)
    np.testing.assert_array_equal(decode_image(str(path)), pixels)


def test_jpeg_is_decoded_close_to_the_original(tmp_path):
    pixels = np.full((16, 24, 3), (200, 120, 180), dtype=np.uint8)
    path = _write(tmp_path / "patch.jpg", Image.fromarray(pixels), quality=95)
    decoded = decode_image(path)
    _check_rgb(decoded, (16, 24))
    assert np.abs(decoded.astype(int) - pixels.astype(int)).max() <= 4


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    path = _write(tmp_path / "gray.png", Image.fromarray(gray, mode="L"))
    decoded = decode_image(path)
    _check_rgb(decoded, (12, 10))
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], gray)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent -> white
    rgba[0, 1] = (10, 20, 30, 255)  # opaque -> unchanged
    rgba[0, 2] = (0, 0, 0, 128)  # half transparent black -> mid grey
    rgba[1:, :] = (50, 100, 150, 255)
    path = _write(tmp_path / "alpha.png", Image.fromarray(rgba, mode="RGBA"))
    decoded = decode_image(path)
    _check_rgb(decoded, (4, 5))
    assert tuple(decoded[0, 0]) == (255, 255, 255)
    assert tuple(decoded[0, 1]) == (10, 20, 30)
    assert all(abs(int(v) - 127) <= 1 for v in decoded[0, 2])
    assert (decoded[1:] == (50, 100, 150)).all()


def test_palette_image_is_converted(tmp_path):
    pixels = np.zeros((6, 8, 3), dtype=np.uint8)
    pixels[:3] = (255, 0, 0)
    pixels[3:] = (0, 0, 255)
    image = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert image.mode == "P"
    path = _write(tmp_path / "palette.png", image)
    decoded = decode_image(path)
    _check_rgb(decoded, (6, 8))
    np.testing.assert_array_equal(decoded, pixels)


def test_palette_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (3, 2), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * (254 * 3))
    image.putpixel((1, 0), 1)
    path = _write(tmp_path / "ptrans.png", image, transparency=0)
    decoded = decode_image(path)
    assert tuple(decoded[0, 0]) == (255, 255, 255)
    assert tuple(decoded[0, 1]) == (200, 10, 10)


@pytest.mark.parametrize("fmt, suffix", [("JPEG", ".jpg"), ("TIFF", ".tif")])
def test_cmyk_is_converted_to_rgb(tmp_path, fmt, suffix):
    image = Image.new("CMYK", (7, 5), (0, 255, 255, 0))  # pure red in CMYK
    path = _write(tmp_path / f"cmyk{suffix}", image, format=fmt)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    decoded = decode_image(path)
    _check_rgb(decoded, (5, 7))
    red = decoded.reshape(-1, 3).astype(int)
    assert (red[:, 0] >= 240).all() and (red[:, 1:] <= 15).all()


def test_16bit_grayscale_png_is_scaled_to_8_bits(tmp_path):
    values = np.array([[0, 65535, 32768], [257, 514, 65280]], dtype=np.uint16)
    path = _write(tmp_path / "deep.png", Image.fromarray(values))
    with Image.open(path) as check:
        assert check.mode.startswith("I;16")
    decoded = decode_image(path)
    _check_rgb(decoded, (2, 3))
    np.testing.assert_array_equal(decoded[..., 0], [[0, 255, 128], [1, 2, 254]])
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()


def test_dark_16bit_png_is_not_brightened(tmp_path):
    # a 16-bit image whose values all happen to be <= 255 is nearly black, not a bright 8-bit one
    values = np.array([[0, 200, 255]], dtype=np.uint16)
    path = _write(tmp_path / "dark.png", Image.fromarray(values))
    decoded = decode_image(path)
    assert decoded.max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)
    pixels[:, :5] = 255  # white band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _write(tmp_path / "rotated.jpg", Image.fromarray(pixels), exif=exif, quality=95)
    with Image.open(path) as raw:
        assert raw.size == (30, 10)
    decoded = decode_image(path)
    _check_rgb(decoded, (30, 10))
    # clockwise rotation takes the left edge to the top
    assert decoded[:4].mean() > 200 and decoded[8:].mean() < 50


def test_bytes_and_file_objects_are_accepted(tmp_path):
    pixels = _rgb(9, 11, seed=3)
    data = _encode(Image.fromarray(pixels))
    np.testing.assert_array_equal(decode_image(data), pixels)
    np.testing.assert_array_equal(decode_image(io.BytesIO(data)), pixels)
    path = tmp_path / "stream.png"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(decode_image(handle), pixels)
        assert not handle.closed  # the caller's stream is left to the caller


def test_is_image_file_is_case_insensitive():
    assert is_image_file("a/B.PNG") and is_image_file("x.Tiff") and is_image_file("y.jpeg")
    assert not is_image_file("notes.txt") and not is_image_file("png")


# -- refused inputs -------------------------------------------------------------------------------


def _raises_naming(source, name: str, match: str | None = None, **options) -> InvalidImageError:
    with pytest.raises(InvalidImageError) as info:
        decode_image(source, **options)
    assert name in str(info.value)
    if match is not None:
        assert match in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    _raises_naming(tmp_path / "absent.png", "absent.png", "no such file")


def test_folder_is_not_an_image(tmp_path):
    (tmp_path / "dir.png").mkdir()
    _raises_naming(tmp_path / "dir.png", "dir.png")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _raises_naming(path, "empty.png", "empty")


def test_empty_bytes():
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 10)
    _raises_naming(path, "notes.png", "not a readable image")


def test_truncated_png(tmp_path):
    data = _encode(Image.fromarray(_rgb(40, 40)))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    _raises_naming(path, "cut.png")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    _raises_naming(path, "noise.jpg")


def test_image_above_max_pixels(tmp_path):
    path = _write(tmp_path / "big.png", Image.fromarray(_rgb(20, 20)))
    error = _raises_naming(path, "big.png", "20x20", max_pixels=100)
    assert "100" in str(error)
    assert decode_image(path, max_pixels=400).shape == (20, 20, 3)  # the limit is inclusive


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but holds one row of data."""
    data = bytearray(_encode(Image.new("RGB", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_large_header_is_refused_by_size_before_decoding():
    # the pixel data is missing: only the size check can produce this message
    with pytest.raises(InvalidImageError, match="5000x4000 pixels, more than the limit"):
        decode_image(_png_header_only(5_000, 4_000), max_pixels=10_000)


def test_huge_header_is_refused():
    with pytest.raises(InvalidImageError, match="too large"):
        decode_image(_png_header_only(50_000, 40_000), max_pixels=10_000)


def test_pillow_bomb_guard_reports_size_not_unreadable():
    # 10000 x 10000 is under our default limit but above Pillow's own decompression-bomb guard
    with pytest.raises(InvalidImageError) as info:
        decode_image(_png_header_only(10_000, 10_000))
    assert "not a readable image" not in str(info.value)
    assert "large" in str(info.value)


def test_float_images_are_refused(tmp_path):
    path = _write(tmp_path / "float.tif", Image.new("F", (3, 3), 0.5))
    _raises_naming(path, "float.tif", "floating-point")


# -- fuzzing --------------------------------------------------------------------------------------

_VALID_PNG = _encode(Image.fromarray(_rgb(8, 8, seed=7)))
_VALID_JPEG = _encode(Image.fromarray(_rgb(8, 8, seed=7)), "JPEG")


def _decodes_or_refuses(data: bytes) -> None:
    try:
        result = decode_image(data, max_pixels=1_000_000)
    except InvalidImageError:
        return
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.uint8
    assert result.ndim == 3 and result.shape[2] == 3
    assert result.shape[0] >= 1 and result.shape[1] >= 1


_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(data):
    _decodes_or_refuses(data)


@st.composite
def _mutated(draw, source: bytes) -> bytes:
    data = bytearray(source)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif kind == "cut":
            data = data[:position] + data[position + draw(st.integers(1, 16)) :]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@_FUZZ
@given(st.one_of(_mutated(_VALID_PNG), _mutated(_VALID_JPEG)))
def test_fuzz_mutated_valid_images(data):
    _decodes_or_refuses(data)


def test_a_large_grey_image_is_converted_by_strips_without_a_full_size_rgb_copy(monkeypatch):
    """Issue 29, memory: an 8000² grey PNG held 11 bytes a pixel while it became RGB (Pillow's
    4-byte RGB copy and a full-size bytes object). Converted by strips, no conversion ever
    sees more than a strip, and the values are those of converting in one piece."""
    from PIL import Image

    from breastpath import imaging

    grey = np.random.default_rng(0).integers(0, 256, (900, 1500), dtype=np.uint8)
    image = Image.fromarray(grey)
    largest: list[int] = []
    real_convert = Image.Image.convert

    def convert(self, mode=None, *args, **kwargs):
        largest.append(self.size[0] * self.size[1])
        return real_convert(self, mode, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", convert)
    monkeypatch.setattr(imaging, "_STRIP_PIXELS", 100_000)
    rgb = imaging._to_rgb_array(image, "grey.png")
    assert max(largest) <= 100_000 and len(largest) > 1
    assert np.array_equal(rgb, np.repeat(grey[..., None], 3, axis=-1))
