"""Uploads: read them within limits, expand zips safely, decode images with 4xx errors.

Uploads stay in memory (or in the multipart parser's anonymous temporary file); nothing is ever
written under a name the client chose. Client file names are only echoed back, cleaned.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from breastpath.errors import InvalidImageError
from breastpath.imaging import IMAGE_EXTENSIONS, decode_image
from breastpath.serve.errors import ApiError, image_error
from breastpath.serve.limits import ServeLimits

_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>\"'`&\\]")
_MAX_NAME = 120


@dataclass(frozen=True)
class Upload:
    """One image file of a request: a display name and its bytes."""

    name: str
    data: bytes


def display_name(raw: str | None, fallback: str = "upload") -> str:
    """A client file name reduced to something safe to echo: no folders, no control characters.

    Examples
    --------
    >>> display_name("../../etc/<x>.png")
    '_x_.png'
    >>> display_name(None, "file 2")
    'file 2'
    """
    name = PurePosixPath(str(raw or "").replace("\\", "/")).name
    name = _UNSAFE.sub("_", name).strip()
    return name[:_MAX_NAME] or fallback


async def read_upload(file: Any, *, limit: int, fallback: str = "upload") -> Upload:
    """Read a Starlette ``UploadFile`` up to ``limit`` bytes; 413 above it, 400 when empty."""
    name = display_name(getattr(file, "filename", None), fallback)
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"{name}: upload larger than {limit} bytes", name=name)
    if not data:
        raise ApiError(400, f"{name}: empty upload", name=name)
    return Upload(name, data)


def is_zip(data: bytes) -> bool:
    """Whether ``data`` starts like a zip archive."""
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def _skipped_member(info: zipfile.ZipInfo) -> bool:
    parts = PurePosixPath(info.filename).parts
    return (
        info.is_dir()
        or not parts
        or parts[0] == "__MACOSX"
        or any(p.startswith(".") for p in parts)
    )


def expand_zip(archive: Upload, limits: ServeLimits) -> list[Upload | ApiError]:
    """The image members of a zip, each as an :class:`Upload` or its :class:`ApiError`.

    Folders, ``__MACOSX`` and hidden files are skipped; members that are not image files are
    reported as errors. The archive may hold at most ``limits.max_files`` members; each expands
    to at most ``max_upload_bytes`` and all together to at most ``max_batch_bytes`` (checked
    while reading, so a lying header cannot get past it).
    """
    try:
        bundle = zipfile.ZipFile(io.BytesIO(archive.data))
        members = [m for m in bundle.infolist() if not _skipped_member(m)]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise ApiError(400, f"{archive.name}: not a readable zip archive ({exc})") from None
    if not members:
        raise ApiError(400, f"{archive.name}: the zip archive holds no files")
    if len(members) > limits.max_files:
        raise ApiError(
            413, f"{archive.name}: {len(members)} files, more than the limit of {limits.max_files}"
        )
    out: list[Upload | ApiError] = []
    budget = limits.max_batch_bytes
    for member in members:
        name = display_name(member.filename, f"{archive.name} member")
        if PurePosixPath(member.filename).suffix.lower() not in IMAGE_EXTENSIONS:
            expected = ", ".join(sorted(IMAGE_EXTENSIONS))
            out.append(ApiError(415, f"{name}: not an image file (expected {expected})", name=name))
            continue
        limit = min(limits.max_upload_bytes, budget)
        try:
            with bundle.open(member) as stream:
                data = stream.read(limit + 1)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
            out.append(ApiError(400, f"{name}: unreadable zip member ({exc})", name=name))
            continue
        if len(data) > limit:
            if limit < limits.max_upload_bytes:
                raise ApiError(
                    413,
                    f"{archive.name}: expands to more than {limits.max_batch_bytes} bytes",
                )
            out.append(
                ApiError(413, f"{name}: larger than {limits.max_upload_bytes} bytes", name=name)
            )
            continue
        budget -= len(data)
        out.append(Upload(name, data) if data else ApiError(400, f"{name}: empty file", name=name))
    return out


def decode_upload(upload: Upload, *, max_pixels: int) -> np.ndarray:
    """Decode an upload to ``(H, W, 3)`` uint8 RGB, or raise a 4xx :class:`ApiError`."""
    if is_zip(upload.data):
        raise ApiError(
            415, f"{upload.name}: a zip archive; send it to /api/predict/batch", name=upload.name
        )
    try:
        return decode_image(upload.data, max_pixels=max_pixels)
    except InvalidImageError as exc:
        raise image_error(exc, upload.name) from None
