"""Read an image file's structure without decoding it: format, size, frames, and refusals.

A decoder's work is not bounded by a file's bytes or its pixels alone: a PNG can hold 19,000
compressed text chunks, a TIFF millions of strips or 64,000 pages (Pillow counts pages
quadratically), a JPEG millions of comment markers or one progressive scan repeated 1,000 times
over an 8192 x 8192 image. :func:`inspect_image` walks the file's chunks, segments or page
directories with a bounded number of steps (each a C-level ``struct``/``re`` call) and refuses
such structures before any decoder sees them. The limits are module constants, documented in
``docs/reliability.md``; a file that is not PNG, JPEG, TIFF or BMP gives ``None`` (the decoder
then says it is not a readable image).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from breastpath.errors import InvalidImageError

#: PNG: most text and metadata chunks (tEXt, zTXt, iTXt, iCCP, eXIf, ...: every ancillary chunk
#: but the few that describe pixels) and their bytes together; most chunks of any kind.
MAX_PNG_METADATA_CHUNKS = 64
MAX_PNG_METADATA_BYTES = 2 << 20
MAX_PNG_CHUNKS = 16_384
#: JPEG: most marker segments (outside the compressed data) and most scans (a baseline image
#: has one per colour plane or one in all; progressive encoders use about 10).
MAX_JPEG_SEGMENTS = 512
MAX_JPEG_SCANS = 64
#: TIFF: most pages, most strips or tiles of the first page, most tags per page, most values
#: of one numeric tag. BigTIFF is not read.
MAX_TIFF_PAGES = 64
MAX_TIFF_BLOCKS = 65_536
MAX_TIFF_TAGS = 512
MAX_TIFF_VALUES = 262_144

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG chunks that describe pixels, frames or colour and are not counted as metadata.
_PNG_PIXEL_CHUNKS = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"pHYs"}
    | {b"bKGD", b"acTL", b"fcTL", b"fdAT"}
)
#: A JPEG marker inside or after compressed data: 0xFF then neither a stuffed 0x00, a restart
#: marker (0xD0-0xD7) nor a fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


@dataclass(frozen=True)
class Header:
    """What :func:`inspect_image` read: Pillow's format name, the size, and frames (pages)."""

    format: str
    width: int
    height: int
    frames: int = 1
    metadata_bytes: int = 0  # PNG text/metadata chunks, JPEG APPn and COM segments

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _refuse(name: str, what: str, count: int, limit: int) -> InvalidImageError:
    return InvalidImageError(
        f"{name}: {what}: {count}, more than the limit of {limit}; refused before decoding"
    )


def inspect_image(data: bytes, *, name: str = "image") -> Header | None:
    """The format, size and frame count of an image's bytes, read from its structure alone.

    Returns ``None`` when the bytes are not a PNG, JPEG, TIFF or BMP file, or when the size
    cannot be found (the decoder then says why). Raises
    :class:`~breastpath.errors.InvalidImageError` for a structure over the module's limits.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("RGB", (50, 40)).save(buffer, format="PNG")
    >>> inspect_image(buffer.getvalue())
    Header(format='PNG', width=50, height=40, frames=1, metadata_bytes=0)
    >>> inspect_image(b"hello") is None
    True
    """
    try:
        return _inspect(data, name)
    except (struct.error, IndexError):
        return None  # a truncated structure: the decoder says what is wrong


def _inspect(data: bytes, name: str) -> Header | None:
    view = memoryview(data)
    if data[:8] == _PNG_SIGNATURE:
        return _png(view, name)
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data, name)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(view, name)
    if data[:4] in (b"II+\x00", b"MM\x00+"):
        raise InvalidImageError(f"{name}: BigTIFF is not supported")
    if data[:2] == b"BM":
        return _bmp(view)
    return None


def _png(data: memoryview, name: str) -> Header | None:
    if len(data) < 33 or bytes(data[12:16]) != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    frames, chunks, meta, meta_bytes, pos = 1, 0, 0, 0, 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _refuse(name, "PNG chunks", chunks, MAX_PNG_CHUNKS)
        if kind not in _PNG_PIXEL_CHUNKS:
            meta, meta_bytes = meta + 1, meta_bytes + length
            if meta > MAX_PNG_METADATA_CHUNKS:
                raise _refuse(name, "PNG text/metadata chunks", meta, MAX_PNG_METADATA_CHUNKS)
            if meta_bytes > MAX_PNG_METADATA_BYTES:
                raise _refuse(
                    name, "bytes of PNG text/metadata", meta_bytes, MAX_PNG_METADATA_BYTES
                )
        elif kind == b"acTL" and length >= 8 and pos + 12 <= len(data):
            frames = max(1, struct.unpack_from(">I", data, pos + 8)[0])
        elif kind == b"IEND":
            break
        pos += 12 + length
    return Header("PNG", int(width), int(height), int(frames), meta_bytes)


def _jpeg(data: bytes, name: str) -> Header | None:
    size: tuple[int, int] | None = None
    segments = scans = meta_bytes = 0
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF or data[pos + 1] in (0x00, 0xFF):
            found = _JPEG_MARKER.search(data, pos)  # compressed data: jump to the next marker
            if found is None:
                break
            pos = found.start()
        marker = data[pos + 1]
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise _refuse(name, "JPEG marker segments", segments, MAX_JPEG_SEGMENTS)
        if marker == 0xD9:
            break
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _JPEG_SOF and size is None and pos + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, pos + 5)
            size = (int(width), int(height))
        elif marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise _refuse(name, "JPEG scans", scans, MAX_JPEG_SCANS)
        elif marker == 0xFE or 0xE0 <= marker <= 0xEF:
            meta_bytes += length
        pos += 2 + max(length, 2)
    return None if size is None else Header("JPEG", size[0], size[1], 1, meta_bytes)


def _tiff(data: memoryview, name: str) -> Header | None:
    order = "<" if bytes(data[:2]) == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", data, 4)
    seen: set[int] = set()
    size: tuple[int, int] | None = None
    while offset and offset + 2 <= len(data):
        if offset in seen:
            raise InvalidImageError(f"{name}: TIFF pages form a loop; refused before decoding")
        seen.add(offset)
        if len(seen) > MAX_TIFF_PAGES:
            raise _refuse(name, "TIFF pages", len(seen), MAX_TIFF_PAGES)
        (count,) = struct.unpack_from(order + "H", data, offset)
        if count > MAX_TIFF_TAGS:
            raise _refuse(name, "tags in a TIFF page", count, MAX_TIFF_TAGS)
        end = offset + 2 + 12 * count
        if end > len(data):
            break
        page = _tiff_page(data, order, offset + 2, count, name)
        size = size or page
        offset = struct.unpack_from(order + "I", data, end)[0] if end + 4 <= len(data) else 0
    return None if size is None else Header("TIFF", size[0], size[1], max(1, len(seen)))


def _tiff_page(
    data: memoryview, order: str, start: int, count: int, name: str
) -> tuple[int, int] | None:
    """Check one page's tags; its ``(width, height)`` when it has both."""
    found: dict[int, int] = {}
    for entry in range(start, start + 12 * count, 12):
        tag, kind, values = struct.unpack_from(order + "HHI", data, entry)
        if tag in (273, 279, 324, 325) and values > MAX_TIFF_BLOCKS:
            raise _refuse(name, "TIFF strips or tiles in a page", values, MAX_TIFF_BLOCKS)
        if kind not in (1, 2, 6, 7) and values > MAX_TIFF_VALUES:
            raise _refuse(name, f"values in TIFF tag {tag}", values, MAX_TIFF_VALUES)
        if tag in (256, 257) and values >= 1:
            fmt = order + ("H" if kind == 3 else "I")
            found[tag] = int(struct.unpack_from(fmt, data, entry + 8)[0])
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _bmp(data: memoryview) -> Header | None:
    if len(data) < 26:
        return None
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    return Header("BMP", abs(int(width)), abs(int(height)))
