"""A byte-bounded least-recently-used cache of encoded tiles, each computed once.

Many viewers (or one viewer's parallel requests) asking for the same tile at once share one
computation: the first caller makes it, the others wait for its result. Failures are not
cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future


class TileCache:
    """``get(key, make)``: the cached bytes of ``key``, else ``make()`` (once for all callers).

    Examples
    --------
    >>> cache = TileCache(max_bytes=10)
    >>> cache.get("a", lambda: b"12345"), cache.get("a", lambda: b"other")
    (b'12345', b'12345')
    >>> _ = cache.get("b", lambda: b"67890"); _ = cache.get("c", lambda: b"x")
    >>> "a" in cache, cache.bytes, cache.hits, cache.misses
    (False, 6, 1, 3)
    """

    def __init__(self, *, max_bytes: int = 64 * 2**20) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, bytes] = OrderedDict()
        self._pending: dict[Hashable, Future[bytes]] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        with self._lock:
            data = self._data.get(key)
            if data is not None:
                self._data.move_to_end(key)
                self.hits += 1
                return data
            future = self._pending.get(key)
            owner = future is None
            if future is None:
                future = self._pending[key] = Future()
                self.misses += 1
        if not owner:
            return future.result()
        try:
            data = make()
        except BaseException as exc:
            with self._lock:
                self._pending.pop(key, None)
            future.set_exception(exc)
            raise
        with self._lock:
            self._pending.pop(key, None)
            if len(data) <= self.max_bytes:
                self._data[key] = data
                self.bytes += len(data)
                while self.bytes > self.max_bytes:
                    self.bytes -= len(self._data.popitem(last=False)[1])
        future.set_result(data)
        return data

    def stats(self) -> dict[str, int]:
        return {
            "tiles": len(self._data),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
        }
