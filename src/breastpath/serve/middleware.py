"""The request guard: body size and body-time limits, and work dropped when its client leaves.

* A body whose ``Content-Length`` is over the limit is answered with 413 before it is read; a
  body that grows past the limit while it streams in is cut off and answered with 413 too,
  whatever the route was doing with it.
* A body that takes longer than ``body_timeout_s`` to arrive is cut off and answered with 408,
  and the connection is closed (a slow client cannot hold a worker).
* Once the body is in, the guard listens for the client going away; if it does before the
  answer is sent, the route is cancelled, and with it the request's model work still queued.
* Every request gets its own owner token (:data:`breastpath.serve.engine.current_owner`), so the
  inference engine can share the model fairly between requests.

Answers are JSON, like every other error of the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from breastpath.serve.engine import current_owner

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Room for multipart boundaries and part headers on top of the file limits.
MULTIPART_OVERHEAD = 64 * 1024


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _Exchange:
    """State of one request/response exchange as the guard sees it."""

    def __init__(self, receive: Receive, send: Send, *, limit: int, deadline: float) -> None:
        self._receive, self._send = receive, send
        self.limit, self.deadline = limit, deadline
        self.received = 0
        self.refused: _Refused | None = None
        self.started = self.finished = self.disconnected = False
        self.body_done = asyncio.Event()
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        if self.body_done.is_set():
            await self.gone.wait()  # the watcher owns the channel now
            return {"type": "http.disconnect"}
        remaining = self.deadline - asyncio.get_running_loop().time()
        try:
            message = await asyncio.wait_for(self._receive(), max(remaining, 0.001))
        except asyncio.TimeoutError:
            self.refused = _Refused(408, "the request body did not arrive in time")
            raise self.refused from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.refused = _Refused(413, "")
                raise self.refused
            if not message.get("more_body", False):
                self.body_done.set()
        elif message["type"] == "http.disconnect":
            self.disconnected = True
            self.gone.set()
        return message

    async def send(self, message: Message) -> None:
        if self.refused is not None:
            return  # whatever the app answers after the cut-off is replaced by the refusal
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self._send(message)

    async def watch(self, task: asyncio.Task) -> None:
        """After the body, wait for the client to leave; cancel ``task`` if it leaves first."""
        await self.body_done.wait()
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        self.disconnected = True
        self.gone.set()
        if not self.finished:
            task.cancel()


class RequestGuard:
    """Body limits and deadlines, client-gone cancellation and per-request owners.

    Parameters
    ----------
    app
        The ASGI app to protect.
    limit_for
        Body limit in bytes for a request path.
    describe
        Message for a refused path (the file limit users know, not the internal body limit).
    body_timeout_s
        Longest time the whole body may take to arrive.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit_for: Callable[[str], int],
        describe: Callable[[str], str],
        body_timeout_s: float = 120.0,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.describe = describe
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.limit_for(path)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(send, 413, self.describe(path))
            return
        loop = asyncio.get_running_loop()
        exchange = _Exchange(receive, send, limit=limit, deadline=loop.time() + self.body_timeout_s)
        token = current_owner.set(object())
        try:
            task = asyncio.ensure_future(self.app(scope, exchange.receive, exchange.send))
        finally:
            current_owner.reset(token)
        watcher = asyncio.ensure_future(exchange.watch(task))
        try:
            await task
        except asyncio.CancelledError:
            if not exchange.disconnected or not task.cancelled():
                raise  # the server itself is cancelling us
            return  # the client left: nobody to answer
        except _Refused:
            pass
        except Exception:
            if exchange.refused is None:
                raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        refused = exchange.refused
        if refused is not None and not exchange.started:
            detail = self.describe(path) if refused.status == 413 else refused.detail
            await self._refuse(send, refused.status, detail)

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


#: The old name of :class:`RequestGuard` (it only limited body sizes then).
BodyLimitMiddleware = RequestGuard
