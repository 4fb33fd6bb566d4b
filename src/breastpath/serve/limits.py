"""Limits of the web app: upload sizes, image size, files per batch, tiles, queue and timeouts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
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
    max_explain
        Most Grad-CAM explanations (``?explain=true``) computed at once. They run on their own
        thread, apart from the model calls of plain predictions, which never wait behind them.
    max_explain_pending
        Most explanations waiting for a turn (0: none wait); beyond it, and when a waiting one
        has not started within ``timeout_s``, the request gets 503 with ``Retry-After``.
    max_explain_tiles
        Most tiles one explanation runs Grad-CAM over (bounds its time and memory); an image
        with more tiles is explained on the model's input (the whole image fitted), with a note.

    Every limit is checked when the limits are made: a count is a whole number of at least 1
    (``max_explain_pending`` at least 0), a duration a finite number of seconds above 0 and
    at most a day; anything else (``nan``, ``inf``, a string, a bool) is a
    :class:`~breastpath.errors.ConfigError`.

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
    max_explain: int = 1
    max_explain_pending: int = 2
    max_explain_tiles: int = 256

    def __post_init__(self) -> None:
        for spec in fields(self):
            check_limit(spec.name, getattr(self, spec.name), seconds=spec.type == "float")

    def to_dict(self) -> dict[str, Any]:
        """The limits as JSON-able values (for ``GET /api/models``)."""
        return asdict(self)


#: Longest duration a limit may give (a day): a bigger one is a typo, not a timeout.
MAX_SECONDS = 86_400.0
#: Largest count a limit may give (also bounds the byte and pixel sizes: 2**50 is a petabyte).
MAX_COUNT = 2**50
#: Limits that may be 0.
MAY_BE_ZERO = frozenset({"max_explain_pending"})


def check_limit(name: str, value: Any, *, seconds: bool) -> None:
    """Raise :class:`~breastpath.errors.ConfigError` unless ``value`` is a valid limit: a finite
    number of seconds in ``(0, MAX_SECONDS]``, or a whole count in ``[1, MAX_COUNT]`` (``[0,
    ...]`` for the limits in :data:`MAY_BE_ZERO`). ``nan`` and ``inf`` never pass (every
    comparison with ``nan`` is false, so it is refused by name).

    Examples
    --------
    >>> check_limit("timeout_s", 2.5, seconds=True)
    >>> check_limit("timeout_s", float("nan"), seconds=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    breastpath.errors.ConfigError: ServeLimits.timeout_s must be a finite number ..., got nan
    """
    if seconds:
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and 0 < value <= MAX_SECONDS
        )
        if not ok:
            raise ConfigError(
                f"ServeLimits.{name} must be a finite number of seconds in (0, {MAX_SECONDS:g}],"
                f" got {value!r}"
            )
        return
    low = 0 if name in MAY_BE_ZERO else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
        raise ConfigError(
            f"ServeLimits.{name} must be a whole number in [{low}, {MAX_COUNT}], got {value!r}"
        )
