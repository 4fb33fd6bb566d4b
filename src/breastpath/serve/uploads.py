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
import struct
import threading
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from breastpath.errors import InvalidImageError
from breastpath.imaging import IMAGE_EXTENSIONS, DecodedImage, decode_image_info
from breastpath.sandbox import DecodeSandbox
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
#: Most entries a zip's central directory may list (members, folders and ``__MACOSX`` entries
#: together), and most bytes it may take; checked from its end record before it is parsed.
MAX_ZIP_ENTRIES = 1024
MAX_CENTRAL_DIRECTORY = 4 << 20
_EOCD = struct.Struct("<4s4H2IH")
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_END = struct.Struct("<4sQ2H2I4Q")


@dataclass(frozen=True)
class Upload:
    """One image file of a request: a display name and its bytes; the magnification the client
    states (else its file name's, :mod:`breastpath.inference.magnification`) and whether a
    mismatch with the model's may be scored anyway (research only)."""

    name: str
    data: bytes
    magnification: str | None = None
    allow_magnification: bool = False


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
    (413 otherwise), and its central directory at most :data:`MAX_ZIP_ENTRIES` entries in
    :data:`MAX_CENTRAL_DIRECTORY` bytes, checked from its end record before it is parsed; an
    unreadable archive is a 400.
    """
    check_zip_directory(archive)
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


def _end_record(data: bytes) -> tuple[int, int] | None:
    """Entries and central-directory bytes from a zip's end record (ZIP64 too), or ``None``
    when there is none (zipfile then says the archive is unreadable)."""
    start = data.rfind(b"PK\x05\x06", max(0, len(data) - _EOCD.size - 0xFFFF))
    if start < 0 or start + _EOCD.size > len(data):
        return None
    fields = _EOCD.unpack_from(data, start)
    entries, directory = fields[4], fields[5]
    locator = start - _ZIP64_LOCATOR.size
    if locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        offset = _ZIP64_LOCATOR.unpack_from(data, locator)[2]
        if (
            0 <= offset <= len(data) - _ZIP64_END.size
            and data[offset : offset + 4] == b"PK\x06\x06"
        ):
            record = _ZIP64_END.unpack_from(data, offset)
            entries, directory = max(entries, record[7]), max(directory, record[8])
    return entries, directory


def check_zip_directory(archive: Upload) -> None:
    """413 when a zip's end record lists more than :data:`MAX_ZIP_ENTRIES` entries or a central
    directory over :data:`MAX_CENTRAL_DIRECTORY` bytes: refused before parsing it."""
    end = _end_record(archive.data)
    if end is None:
        return
    entries, directory = end
    if entries > MAX_ZIP_ENTRIES:
        raise ApiError(
            413,
            f"{archive.name}: the zip's directory lists {entries} entries, more than the limit "
            f"of {MAX_ZIP_ENTRIES}; not opened",
        )
    if directory > MAX_CENTRAL_DIRECTORY:
        raise ApiError(
            413,
            f"{archive.name}: the zip's directory takes {directory} bytes, more than the limit "
            f"of {MAX_CENTRAL_DIRECTORY}; not opened",
        )


def read_member(member: Member, *, limits: ServeLimits, budget: RequestBudget) -> Upload:
    """Read one member within ``max_upload_bytes`` and what is left of the request's bytes.

    Read in bounded steps, so a member whose header lies about its size cannot get past the
    limit; a member that declares more than the limit is not decompressed at all. Raises a 4xx
    :class:`ApiError`; every byte decompressed is taken from ``budget``, refused or not.
    """
    name = member.name
    limit = min(limits.max_upload_bytes, budget.bytes)
    if limit <= 0:
        raise ApiError(413, f"{name}: not read: {_spent(limits)}", name=name)
    if member.info.file_size > limits.max_upload_bytes:
        raise ApiError(
            413,
            f"{name}: declares {member.info.file_size} bytes, larger than "
            f"{limits.max_upload_bytes} bytes; not decompressed",
            name=name,
        )
    chunks, size = [], 0
    try:
        with member.bundle.open(member.info) as stream:
            while size <= limit:
                chunk = stream.read(min(_CHUNK, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required"
        raise ApiError(415, f"{name}: unreadable zip member ({exc})", name=name) from None
    except Exception as exc:  # any failure of the archive's reader is a bad member
        raise ApiError(400, f"{name}: unreadable zip member ({exc})", name=name) from None
    finally:
        budget.bytes = max(0, budget.bytes - size)  # every byte decompressed counts
    if size > limit:
        if limit < limits.max_upload_bytes:
            raise ApiError(413, f"{name}: not read: {_spent(limits)}", name=name)
        raise ApiError(413, f"{name}: larger than {limits.max_upload_bytes} bytes", name=name)
    if not size:
        raise ApiError(400, f"{name}: empty file", name=name)
    return Upload(name, b"".join(chunks))


def _spent(limits: ServeLimits) -> str:
    return (
        f"this request's images already expand to the limit of {limits.max_batch_bytes} bytes "
        "per request"
    )


def decode_upload_info(
    upload: Upload,
    *,
    max_pixels: int,
    sandbox: DecodeSandbox | None = None,
    cancel: threading.Event | None = None,
) -> DecodedImage:
    """Decode an upload (its first frame) to RGB, with its frame count, or raise a 4xx
    :class:`ApiError`.

    With a ``sandbox`` (the server's), the upload is decoded there: inline when it is a small
    patch, otherwise in a worker process under hard limits (``cancel`` stops it). Any failure,
    a limit passed included, is a 4xx.
    """
    if is_zip(upload.data):
        raise ApiError(
            415, f"{upload.name}: a zip archive; send it to /api/predict/batch", name=upload.name
        )
    try:
        if sandbox is not None:
            return sandbox.decode(upload.data, cancel=cancel)
        return decode_image_info(upload.data, max_pixels=max_pixels)
    except InvalidImageError as exc:
        raise image_error(exc, upload.name) from None


def decode_upload(upload: Upload, *, max_pixels: int) -> np.ndarray:
    """Decode an upload to ``(H, W, 3)`` uint8 RGB, or raise a 4xx :class:`ApiError`."""
    return decode_upload_info(upload, max_pixels=max_pixels).pixels
