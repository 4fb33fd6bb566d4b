"""An access token for a server reachable from other hosts (``breastpath serve --token``).

With a token, every request but the static files (``/static/...``: the page's own script,
style and OpenSeadragon, no data) and the health check (``/api/health``) must carry it, in one of

* a header: ``Authorization: Bearer TOKEN`` or ``X-Breastpath-Token: TOKEN`` (API clients);
* the cookie ``breastpath_token`` (HttpOnly, SameSite=Lax), which a browser gets by opening any
  page once with ``?token=TOKEN``: the answer sets the cookie and redirects (303) to the same
  address without the token, so it does not stay in the address bar or the history.

Anything else is a 401 (JSON, ``WWW-Authenticate: Bearer``). Tokens are compared in constant
time (:func:`hmac.compare_digest`). :func:`check_exposure` is the start-up rule: a server on a
host that is not a loopback address needs a token, or an explicit ``--insecure-public``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from breastpath.errors import ConfigError

COOKIE = "breastpath_token"
HEADER = b"x-breastpath-token"
#: Shortest token accepted (a guessable token is no protection).
MIN_TOKEN_CHARS = 16
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]{%d,}" % MIN_TOKEN_CHARS)  # noqa: UP031
OPEN_PATHS = ("/static/",)
OPEN_EXACT = ("/api/health",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine.

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("192.168.1.5"), is_loopback("example.org")
    (False, False, False)
    """
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve anywhere


def check_exposure(host: str, token: str | None, *, insecure_public: bool = False) -> None:
    """Refuse (:class:`ConfigError`) a non-loopback ``host`` without a token (unless
    ``insecure_public``), and a token shorter than :data:`MIN_TOKEN_CHARS`."""
    if token is not None and not TOKEN_CHARS.fullmatch(token):
        raise ConfigError(
            f"--token must be at least {MIN_TOKEN_CHARS} characters of A-Z a-z 0-9 . _ ~ - "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    if token is None and not insecure_public and not is_loopback(host):
        raise ConfigError(
            f"--host {host} is reachable from other machines, and slides carry patients' data: "
            "give an access token (--token or BREASTPATH_TOKEN; then open the page once with "
            "?token=...), or --insecure-public to serve without one"
        )


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def presented(scope: dict[str, Any]) -> str | None:
    """The token a request carries in a header or the cookie (None when none)."""
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    direct = _header(scope, HEADER)
    if direct:
        return direct.strip()
    cookie = _header(scope, b"cookie")
    if cookie:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie)
        except Exception:  # a malformed cookie header is no token
            return None
        if COOKIE in jar:
            return jar[COOKIE].value
    return None


class TokenGuard:
    """ASGI middleware: requests without the token get 401 (see the module docstring)."""

    def __init__(self, app: Any, *, token: str) -> None:
        self.app = app
        self._token = token.encode("utf-8")

    def _matches(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode("utf-8"), self._token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or ""
        if path.startswith(OPEN_PATHS) or path in OPEN_EXACT:
            await self.app(scope, receive, send)
            return
        query = parse_qsl((scope.get("query_string") or b"").decode("latin-1"))
        given = [v for k, v in query if k == "token"]
        if given and scope.get("method") in ("GET", "HEAD") and self._matches(given[-1]):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            await _redirect(send, path + (f"?{rest}" if rest else ""), given[-1])
            return
        if self._matches(presented(scope)):
            await self.app(scope, receive, send)
            return
        await _refuse(send)


async def _redirect(send: Any, location: str, token: str) -> None:
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax"
    headers = [
        (b"location", location.encode("latin-1")),
        (b"set-cookie", cookie.encode("latin-1")),
        (b"cache-control", b"no-store"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Any) -> None:
    body = json.dumps(
        {
            "detail": "an access token is required: open the page once with ?token=TOKEN, or "
            "send Authorization: Bearer TOKEN"
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
