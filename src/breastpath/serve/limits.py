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
        Largest body of a batch request, and the most bytes a zip may expand to.
    max_pixels
        Largest image (width x height); bigger ones are refused before their pixels are decoded
        (decompression-bomb guard).
    max_files
        Most images in one batch (files sent, or members of a zip).
    max_tiles
        Most model-input tiles an image larger than the input size is cut into; a bigger image
        is scored whole and its tile map is left out (with a note).
    max_batch_size
        Most images per model call when concurrent requests are batched together.
    max_pending
        Most requests waiting for the model; beyond it requests get 503 at once.
    timeout_s
        Longest wait for the model per request; beyond it the request gets 504.

    Examples
    --------
    >>> ServeLimits(max_files=8).max_files
    8
    """

    max_upload_bytes: int = 20 * MIB
    max_batch_bytes: int = 100 * MIB
    max_pixels: int = 8192 * 8192
    max_files: int = 64
    max_tiles: int = 1024
    max_batch_size: int = 64
    max_pending: int = 256
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"ServeLimits.{name} must be a positive number, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The limits as JSON-able values (for ``GET /api/health``)."""
        return asdict(self)
