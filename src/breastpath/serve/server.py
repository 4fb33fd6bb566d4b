"""Run the app with uvicorn, with the connection-level limits a public server needs.

uvicorn times out idle keep-alive connections (``keep_alive_s``) but not a client that sends
its headers slowly, or sends nothing at all: 40 such connections were held for 30 s and none was
closed. :class:`GuardedH11Protocol` gives every request ``header_timeout_s`` to send its
headers (from the connection's start, or from the end of the previous answer on a keep-alive
connection) and closes the connection otherwise; the body has ``body_timeout_s``
(:class:`~breastpath.serve.middleware.RequestGuard`), and at most ``max_connections``
connections and requests are served at once (more get 503).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from breastpath.serve.limits import ServeLimits


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request headers."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers are complete
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm_header_timer()  # the next request's headers, on a keep-alive connection
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)


def guarded_protocol(limits: ServeLimits) -> type[GuardedH11Protocol]:
    """The protocol class with ``limits.header_timeout_s``."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout_s": float(limits.header_timeout_s)},
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port chosen by the system)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(
    app: Any, *, limits: ServeLimits, log_level: str = "info", access_log: bool = True
) -> Any:
    """A ``uvicorn.Server`` for ``app`` with the connection limits of ``limits``.

    Examples
    --------
    >>> sock = bind("127.0.0.1", 0)  # doctest: +SKIP
    >>> make_server(app, limits=ServeLimits()).run(sockets=[sock])  # doctest: +SKIP
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        timeout_keep_alive=max(1, round(limits.keep_alive_s)),
        limit_concurrency=limits.max_connections,
        timeout_graceful_shutdown=5,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
    )
    return uvicorn.Server(config)
