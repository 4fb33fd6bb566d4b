"""Decode image files and buffers into RGB uint8 arrays, with clear errors.

One decoding function is shared by ``prepare``, ``predict`` and the web API, so that every entry
point accepts and rejects the same inputs.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from breastpath.errors import DatasetLayoutError, InvalidImageError

#: Refuse images with more pixels than this (decompression-bomb guard): 16k x 16k.
DEFAULT_MAX_PIXELS = 16_384 * 16_384

#: File extensions treated as images when scanning folders.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

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


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return getattr(source, "name", "<stream>")


def decode_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image into an ``(H, W, 3)`` uint8 RGB array.

    Parameters
    ----------
    source
        A path, the file's bytes, or a binary file object.
    max_pixels
        Images with more pixels are refused before their pixels are decoded.

    Returns
    -------
    numpy.ndarray
        RGB pixels, ``uint8``, shape ``(H, W, 3)``. Grayscale is replicated to three channels,
        alpha is composited onto white, palette and CMYK images are converted, 16-bit images are
        scaled to 8 bits and EXIF orientation is applied.

    Raises
    ------
    InvalidImageError
        The input is missing, empty, not an image, truncated, or too large.

    Examples
    --------
    >>> from breastpath.imaging import decode_image
    >>> rgb = decode_image("patch.png")  # doctest: +SKIP
    >>> rgb.shape, rgb.dtype  # doctest: +SKIP
    ((50, 50, 3), dtype('uint8'))
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError(f"{name}: no such file")
        if path.stat().st_size == 0:
            raise InvalidImageError(f"{name}: file is empty")
        stream: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed below
    elif isinstance(source, bytes):
        if not source:
            raise InvalidImageError(f"{name}: empty buffer")
        stream = io.BytesIO(source)
    else:
        stream = source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            width, height = image.size
            if width < 1 or height < 1:
                raise InvalidImageError(f"{name}: image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"{name}: image is {width}x{height} pixels, more than the limit of "
                    f"{max_pixels} pixels"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb_array(image, name)
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"{name}: image is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise InvalidImageError(f"{name}: not a readable image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"{name}: corrupt or truncated image ({exc})") from None
    finally:
        if stream is not source:
            stream.close()


def _to_rgb_array(image, name: str) -> np.ndarray:
    from PIL import Image

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        # 16-bit modes always span 0..65535; only 32-bit "I" has no fixed range.
        peak = 65535.0 if mode != "I" or array.max(initial=0) > 255 else 255.0
        array = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(array[..., None], 3, axis=-1)
    if mode == "F":
        raise InvalidImageError(f"{name}: floating-point images are not supported")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidImageError(f"{name}: could not convert mode {mode!r} to RGB")
    return np.ascontiguousarray(rgb)
