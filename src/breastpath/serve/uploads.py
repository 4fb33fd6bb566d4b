"""Uploads: read them within limits, open zips safely, read members lazily, decode with 4xx errors.

Uploads stay in memory (or in the multipart parser's anonymous temporary file); nothing is ever
written under a name the client chose. Client file names are only echoed back, cleaned.

A zip is opened without reading its members (:func:`open_zip`); each member is read when its turn
comes (:func:`read_member`), within what is left of the request's :class:`RequestBudget`, so a
batch holds one expanded member at a time. Only stored and deflate members are read (deflate is
decompressed in bounded steps by :mod:`zipfile`; its bzip2 and LZMA readers are not bounded),
encrypted members are refused, and members with an unsafe or hidden path are reported, not read.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from breastpath.errors import InvalidImageError
from breastpath.imaging import IMAGE_EXTENSIONS, DecodedImage, decode_image_info
from breastpath.serve.errors import ApiError, image_error
from breastpath.serve.limits import ServeLimits

_UNSAFE = re.compile(r"[<>\"'`&\\]")
#: Unicode categories removed from echoed names: controls, format characters (bidi overrides
#: such as U+202E, zero-width characters), surrogates, private use, unassigned, line separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_MAX_NAME = 120
#: Zip compression methods read: stored and deflate.
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 9: "deflate64"}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Upload:
    """One image file of a request: a display name and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Member:
    """A zip member not read yet (see :func:`read_member`)."""

    name: str
    bundle: zipfile.ZipFile
    info: zipfile.ZipInfo


@dataclass
class RequestBudget:
    """What is left of one request's limits: bytes of images, decoded pixels, tiles.

    Examples
    --------
    >>> budget = RequestBudget.of(ServeLimits())
    >>> budget.pixels == ServeLimits().max_request_pixels
    True
    """

    bytes: int
    pixels: int
    tiles: int

    @classmethod
    def of(cls, limits: ServeLimits) -> RequestBudget:
        return cls(limits.max_batch_bytes, limits.max_request_pixels, limits.max_request_tiles)


def display_name(raw: str | None, fallback: str = "upload") -> str:
    """A client file name reduced to something safe to echo: no folders; control, bidi and
    other invisible characters replaced by ``_``.

    Examples
    --------
    >>> display_name("../../etc/<x>.png")
    '_x_.png'
    >>> display_name("invoice\\u202egnp.exe")
    'invoice_gnp.exe'
    >>> display_name(None, "file 2")
    'file 2'
    """
    text = "".join("_" if unicodedata.category(c) in _INVISIBLE else c for c in str(raw or ""))
    name = PurePosixPath(text.replace("\\", "/")).name
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


def _ignored(info: zipfile.ZipInfo) -> bool:
    """Folders and macOS resource forks: not files of the user's."""
    parts = PurePosixPath(info.filename).parts
    return info.is_dir() or not parts or parts[0] == "__MACOSX"


def _refusal(info: zipfile.ZipInfo, name: str) -> ApiError | None:
    """Why a member is not read, or ``None`` when it may be."""
    path = info.filename.replace("\\", "/")
    parts = [p for p in path.split("/") if p]
    if path.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        return ApiError(400, f"{name}: unsafe path in the archive; not read", name=name)
    if any(p.startswith(".") for p in parts):
        return ApiError(400, f"{name}: hidden file in the archive; not read", name=name)
    if info.flag_bits & 0x1:
        return ApiError(415, f"{name}: encrypted zip member; not supported", name=name)
    if info.compress_type not in ZIP_METHODS:
        method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        return ApiError(
            415,
            f"{name}: compressed with {method}; only stored and deflate members are read",
            name=name,
        )
    if PurePosixPath(path).suffix.lower() not in IMAGE_EXTENSIONS:
        expected = ", ".join(sorted(IMAGE_EXTENSIONS))
        return ApiError(415, f"{name}: not an image file (expected {expected})", name=name)
    return None


def open_zip(archive: Upload, limits: ServeLimits) -> tuple[list[Member | ApiError], int]:
    """The members of a zip, each a :class:`Member` to read later or the :class:`ApiError` that
    says why it is not read, and the number of ignored entries (folders, ``__MACOSX``).

    Nothing is decompressed here. The archive may hold at most ``limits.max_files`` members
    (413 otherwise); an unreadable archive is a 400.
    """
    try:
        bundle = zipfile.ZipFile(io.BytesIO(archive.data))
        infos = bundle.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ApiError(400, f"{archive.name}: not a readable zip archive ({exc})") from None
    members = [m for m in infos if not _ignored(m)]
    if not members:
        raise ApiError(400, f"{archive.name}: the zip archive holds no files")
    if len(members) > limits.max_files:
        raise ApiError(
            413, f"{archive.name}: {len(members)} files, more than the limit of {limits.max_files}"
        )
    out: list[Member | ApiError] = []
    for info in members:
        name = display_name(info.filename, f"{archive.name} member")
        refusal = _refusal(info, name)
        out.append(refusal if refusal is not None else Member(name, bundle, info))
    return out, len(infos) - len(members)


def read_member(member: Member, *, limits: ServeLimits, budget: RequestBudget) -> Upload:
    """Read one member within ``max_upload_bytes`` and what is left of the request's bytes.

    Read in bounded steps, so a member whose header lies about its size cannot get past the
    limit. Raises a 4xx :class:`ApiError`; takes the bytes read from ``budget``.
    """
    name = member.name
    limit = min(limits.max_upload_bytes, budget.bytes)
    if limit <= 0:
        raise ApiError(413, f"{name}: not read: {_spent(limits)}", name=name)
    chunks, size = [], 0
    try:
        with member.bundle.open(member.info) as stream:
            while size <= limit:
                chunk = stream.read(min(_CHUNK, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
        raise ApiError(400, f"{name}: unreadable zip member ({exc})", name=name) from None
    except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required"
        raise ApiError(415, f"{name}: unreadable zip member ({exc})", name=name) from None
    if size > limit:
        if limit < limits.max_upload_bytes:
            raise ApiError(413, f"{name}: not read: {_spent(limits)}", name=name)
        raise ApiError(413, f"{name}: larger than {limits.max_upload_bytes} bytes", name=name)
    if not size:
        raise ApiError(400, f"{name}: empty file", name=name)
    budget.bytes -= size
    return Upload(name, b"".join(chunks))


def _spent(limits: ServeLimits) -> str:
    return (
        f"this request's images already expand to the limit of {limits.max_batch_bytes} bytes "
        "per request"
    )


def decode_upload_info(upload: Upload, *, max_pixels: int) -> DecodedImage:
    """Decode an upload (its first frame) to RGB, with its frame count, or raise a 4xx
    :class:`ApiError`."""
    if is_zip(upload.data):
        raise ApiError(
            415, f"{upload.name}: a zip archive; send it to /api/predict/batch", name=upload.name
        )
    try:
        return decode_image_info(upload.data, max_pixels=max_pixels)
    except InvalidImageError as exc:
        raise image_error(exc, upload.name) from None


def decode_upload(upload: Upload, *, max_pixels: int) -> np.ndarray:
    """Decode an upload to ``(H, W, 3)`` uint8 RGB, or raise a 4xx :class:`ApiError`."""
    return decode_upload_info(upload, max_pixels=max_pixels).pixels
