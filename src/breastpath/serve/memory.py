"""Give memory back to the system after large requests (glibc only; elsewhere a no-op).

Decoded images are large, short-lived buffers. glibc keeps freed heap memory for reuse, and its
threshold for serving large allocations with ``mmap`` (returned at once on free) grows up to
32 MB as such blocks are freed, so after a few big requests the server's RSS stays at its peak.
:func:`tune_allocator` fixes that threshold at 1 MiB (called once when the server starts), and
:func:`release_memory` (run in a worker thread after a large request) asks glibc to return the
free pages of its heaps (``malloc_trim``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import time

#: ``mallopt`` parameter of the mmap threshold (glibc ``M_MMAP_THRESHOLD``).
_M_MMAP_THRESHOLD = -3
#: Allocations at least this large get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 1 << 20
#: Requests that decoded or expanded at least this much trigger :func:`release_memory`.
LARGE_REQUEST_PIXELS = 16 * 1024 * 1024
LARGE_REQUEST_BYTES = 16 * 1024 * 1024

_lock = threading.Lock()
_last = [0.0]


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - glibc only
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator() -> bool:
    """Serve allocations of :data:`MMAP_THRESHOLD` bytes and more with ``mmap``; whether it
    applied (glibc)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_memory(*, min_interval_s: float = 1.0) -> bool:
    """Return free heap pages to the system (``malloc_trim(0)``), at most once per
    ``min_interval_s``; whether it ran.

    Examples
    --------
    >>> isinstance(release_memory(min_interval_s=0.0), bool)
    True
    """
    libc = _libc()
    if libc is None:
        return False
    with _lock:
        now = time.monotonic()
        if now - _last[0] < min_interval_s:
            return False
        _last[0] = now
    libc.malloc_trim(0)  # ctypes releases the GIL for the call
    return True
