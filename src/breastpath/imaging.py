"""Decode image files and buffers into RGB uint8 arrays, with clear errors.

One decoding function is shared by ``prepare``, ``predict`` and the web API, so that every entry
point accepts and rejects the same inputs.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from breastpath.errors import DatasetLayoutError, DecodeLimitError, InvalidImageError
from breastpath.image_header import inspect_image

#: Refuse images with more pixels than this (decompression-bomb guard): 16k x 16k.
DEFAULT_MAX_PIXELS = 16_384 * 16_384

#: File extensions treated as images when scanning folders.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

#: The only formats Pillow may open (its format names): PNG (and APNG), JPEG (a camera's
#: multi-picture JPEG comes out as MPO), TIFF and BMP. Anything else (GIF, WebP, PCX, TGA, PPM,
#: ICO, EPS, ...) is refused as "not a readable image" before a decoder for it is reached.
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")

#: Refuse images more elongated than this (longer side / shorter side) whose longer side is
#: over :data:`MAX_ELONGATED_SIDE`: such an image keeps a sliver of itself after the center crop
#: to a square input, and a 1 x 60,000,000 PNG of 57 KB would otherwise be decoded to 180 MB to
#: score one pixel column. Small odd shapes (1 x 101) are harmless and accepted.
MAX_ASPECT_RATIO = 100
MAX_ELONGATED_SIDE = 4096

ImageSource = str | os.PathLike | bytes | BinaryIO


def is_image_file(name: str | os.PathLike) -> bool:
    """Return True when ``name`` has an image file extension (case-insensitive)."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def gather_image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files named in ``paths``, with folders expanded to their image files (sorted, recursive).

    Raises :class:`~breastpath.errors.DatasetLayoutError` for a missing path or a folder without
    image files.
    """
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p.name))
            if not found:
                raise DatasetLayoutError(f"{path}: holds no image files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DatasetLayoutError(f"{path}: no such file or folder")
    return files


def describe_source(source: ImageSource) -> str:
    """How error messages name ``source``: its path, its size in bytes, or its stream name."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return getattr(source, "name", "<stream>")


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded by :func:`decode_image_info`: its pixels and what was left out."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    format: str  # Pillow's format name: PNG, JPEG (or MPO), TIFF or BMP
    frames: int  # frames (pages) in the file; only the first is decoded

    @property
    def note(self) -> str | None:
        """A plain sentence when only the first of several frames was decoded, else ``None``."""
        if self.frames <= 1:
            return None
        return f"{self.format} with {self.frames} frames: only the first frame was scored"


def decode_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image into an ``(H, W, 3)`` uint8 RGB array.

    The pixels of :func:`decode_image_info`; see there for what is accepted.

    Examples
    --------
    >>> from breastpath.imaging import decode_image
    >>> rgb = decode_image("patch.png")  # doctest: +SKIP
    >>> rgb.shape, rgb.dtype  # doctest: +SKIP
    ((50, 50, 3), dtype('uint8'))
    """
    return decode_image_info(source, max_pixels=max_pixels).pixels


def decode_image_info(
    source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> DecodedImage:
    """Decode an image into RGB pixels, with its format and frame count.

    Parameters
    ----------
    source
        A path, the file's bytes, or a binary file object.
    max_pixels
        Images with more pixels are refused before their pixels are decoded, and so are large
        images more elongated than :data:`MAX_ASPECT_RATIO` (see :func:`check_size`).
    name
        How error messages name the image (default: :func:`describe_source`).

    Returns
    -------
    DecodedImage
        RGB pixels, ``uint8``, shape ``(H, W, 3)``, of the first frame. Grayscale is replicated
        to three channels, alpha is composited onto white, palette and CMYK images are
        converted, 16-bit images are scaled to 8 bits and EXIF orientation is applied. Only the
        formats in :data:`IMAGE_FORMATS` are opened.

    Raises
    ------
    InvalidImageError
        The input is missing, empty, not an image (or not one of the accepted formats),
        unreadable, truncated, too large or too elongated.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    >>> buffer = io.BytesIO()
    >>> frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    >>> decoded = decode_image_info(buffer.getvalue())
    >>> decoded.pixels.shape, decoded.frames, decoded.note
    ((8, 8, 3), 2, 'TIFF with 2 frames: only the first frame was scored')
    """
    name = name or describe_source(source)
    data = read_source(source, name)
    inspect_image(data, name=name)  # refuses costly structures before any decoder sees them
    try:
        return _decode_bytes(data, name=name, max_pixels=max_pixels)
    except InvalidImageError:
        raise
    except MemoryError:
        raise DecodeLimitError(f"{name}: not enough memory to decode this image") from None
    except Exception as exc:  # any decoder failure is a bad image, never a crash
        raise InvalidImageError(
            f"{name}: corrupt or unsupported image ({type(exc).__name__}: {exc})"[:500]
        ) from None


def _decode_bytes(data: bytes, *, name: str, max_pixels: int) -> DecodedImage:
    """Pillow's part of :func:`decode_image_info`; its expected errors named here."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            check_size(opened.size, max_pixels=max_pixels, name=name)
            frames = int(getattr(opened, "n_frames", 1) or 1)
            fmt = str(opened.format)
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)  # (a copy otherwise, even if upright)
            return DecodedImage(_to_rgb_array(opened, name), fmt, frames)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"{name}: image is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"{name}: not a readable image (accepted: {', '.join(IMAGE_FORMATS)})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, InvalidImageError):
            raise
        raise InvalidImageError(f"{name}: corrupt or truncated image ({exc})") from None


def read_source(source: ImageSource, name: str) -> bytes:
    """The bytes of ``source``; a file that cannot be read is an InvalidImageError."""
    if isinstance(source, bytes):
        if not source:
            raise InvalidImageError(f"{name}: empty buffer")
        return source
    if not isinstance(source, (str, os.PathLike)):
        data = source.read()
        if not data:
            raise InvalidImageError(f"{name}: empty stream")
        return bytes(data)
    path = Path(source)
    try:
        if not path.is_file():
            raise InvalidImageError(f"{name}: no such file")
        with open(path, "rb") as stream:
            data = stream.read()
    except PermissionError:
        raise InvalidImageError(f"{name}: permission denied (the file is not readable)") from None
    except OSError as exc:
        raise InvalidImageError(f"{name}: cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise InvalidImageError(f"{name}: file is empty")
    return data


def check_size(size: tuple[int, int], *, max_pixels: int, name: str) -> None:
    """Refuse a ``(width, height)`` with no pixels, over ``max_pixels``, or both longer than
    :data:`MAX_ELONGATED_SIDE` and more elongated than :data:`MAX_ASPECT_RATIO` to 1.

    Examples
    --------
    >>> check_size((700, 460), max_pixels=10**6, name="a.png")
    >>> check_size((1, 60_000_000), max_pixels=10**9, name="thin.png")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    breastpath.errors.InvalidImageError: thin.png: image is 1x60000000 pixels, more elongated ...
    """
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImageError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"{name}: image is {width}x{height} pixels, more than the limit of {max_pixels} pixels"
        )
    longer, shorter = max(width, height), min(width, height)
    if longer > MAX_ELONGATED_SIDE and longer > MAX_ASPECT_RATIO * shorter:
        raise InvalidImageError(
            f"{name}: image is {width}x{height} pixels, more elongated than the limit of "
            f"{MAX_ASPECT_RATIO}:1"
        )


def probe_size(data: bytes, *, name: str = "image") -> tuple[int, int] | None:
    """``(width, height)`` from an image's header (no pixels decoded, a bounded walk of its
    structure: :func:`~breastpath.image_header.inspect_image`), or ``None`` when the bytes are
    not an accepted image or are refused (decoding then says why)."""
    try:
        header = inspect_image(data, name=name)
    except InvalidImageError:
        return None
    return None if header is None else (header.width, header.height)


#: Images are copied out of Pillow (and converted to RGB) a strip of about this many pixels at
#: a time: in one piece the copy holds the interpreter lock for a long moment (a 8000 x 8000
#: image stalled the server's event loop ~0.1 s), and a conversion in one piece holds a second
#: full-size image (Pillow keeps RGB in 4 bytes a pixel) plus a full-size bytes object: 11 bytes
#: a pixel for a grey 8000 x 8000 PNG, 709 MiB in a decode worker. By strips the output array
#: (3 bytes a pixel) is the only full-size copy beside Pillow's own.
_STRIP_PIXELS = 1 << 20

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")


def _strip_rgb(strip, mode: str, *, peak: float, alpha: bool) -> np.ndarray:
    """One strip (a Pillow image) as ``(h, w, 3)`` uint8."""
    from PIL import Image

    if mode in _SIXTEEN_BIT:
        grey = np.asarray(strip, dtype=np.float64)
        grey = np.clip(np.round(grey / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if alpha:
        rgba = strip.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        strip = Image.alpha_composite(background, rgba)
    return np.asarray(strip if strip.mode == "RGB" else strip.convert("RGB"), dtype=np.uint8)


def _to_rgb_array(image, name: str) -> np.ndarray:
    mode = image.mode
    if mode == "F":
        raise InvalidImageError(f"{name}: floating-point images are not supported")
    peak = 255.0
    if mode in _SIXTEEN_BIT:
        # 16-bit modes always span 0..65535; only 32-bit "I" has no fixed range.
        peak = 65535.0 if mode != "I" or (image.getextrema()[1] or 0) > 255 else 255.0
    alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info)
    width, height = image.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip = image if (top, bottom) == (0, height) else image.crop((0, top, width, bottom))
        rgb = _strip_rgb(strip, mode, peak=peak, alpha=alpha)
        if rgb.shape != (bottom - top, width, 3):
            raise InvalidImageError(f"{name}: could not convert mode {mode!r} to RGB")
        out[top:bottom] = rgb
    return out
