"""Limits of the web app: upload sizes, image size, files per batch, tiles, queue and timeouts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from breastpath.errors import ConfigError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeLimits:
    """Limits applied to every request (all configurable from ``breastpath serve``).

    Parameters
    ----------
    max_upload_bytes
        Largest image file, and largest body of a single-image request (plus multipart overhead).
    max_batch_bytes
        Largest body of a batch request, and the most bytes all images of one request may
        expand to (files as sent plus zip members as expanded, all zips together).
    max_pixels
        Largest image (width x height); bigger ones are refused before their pixels are decoded
        (decompression-bomb guard). Images longer than 4096 px and more elongated than 100:1
        are refused too.
    max_request_pixels
        Most pixels decoded for one request, all its images together; an image whose header
        would pass it is refused (413 in its result line) without being decoded.
    max_files
        Most images in one batch (files sent, or members of a zip).
    max_tiles
        Most model-input tiles an image larger than the input size is cut into; a bigger image
        is scored whole and its tile map is left out (with a note).
    max_request_tiles
        Most tiles scored for one request, all its images together; past it images are scored
        whole, with a note.
    max_batch_size
        Most images per model call; a large job is cut into calls of this size and shares each
        call with the other requests waiting (round-robin).
    max_pending
        Most model jobs waiting; beyond it requests get 503 at once.
    timeout_s
        Longest wait for the model per job (one image of a batch); beyond it the request gets
        504 and its remaining work is dropped.
    header_timeout_s
        Longest time a connection may take to send a request's headers (then it is closed).
    body_timeout_s
        Longest time a request may take to send its body (then 408 and the connection closed).
    keep_alive_s
        Longest idle time of a keep-alive connection between requests.
    max_connections
        Most connections and requests at once; beyond it new requests get 503.

    Examples
    --------
    >>> ServeLimits(max_files=8).max_files
    8
    """

    max_upload_bytes: int = 20 * MIB
    max_batch_bytes: int = 100 * MIB
    max_pixels: int = 8192 * 8192
    max_request_pixels: int = 4 * 8192 * 8192
    max_files: int = 64
    max_tiles: int = 1024
    max_request_tiles: int = 8192
    max_batch_size: int = 64
    max_pending: int = 256
    timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 120.0
    keep_alive_s: float = 5.0
    max_connections: int = 512

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"ServeLimits.{name} must be a positive number, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The limits as JSON-able values (for ``GET /api/models``)."""
        return asdict(self)
