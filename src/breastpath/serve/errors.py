"""HTTP errors of the web app: every failure is a JSON ``{"detail": ...}``, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from breastpath.errors import DecodeLimitError, InvalidImageError, MagnificationError

log = logging.getLogger("breastpath.serve")


class ApiError(Exception):
    """An error with an HTTP status and a message for the client.

    Examples
    --------
    >>> ApiError(415, "notes.txt: not a readable image").status
    415
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        name: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = int(status)
        self.detail = str(detail)
        self.name = name  # the file it is about, if any
        self.headers = headers  # sent with the answer (``Retry-After`` of a 503)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail}


def image_error(exc: InvalidImageError, name: str) -> ApiError:
    """Turn a decoding error into a 4xx: 413 too large, 415 not an image or mode, 400 otherwise."""
    message = str(exc).split(": ", 1)[-1]
    if isinstance(exc, MagnificationError):
        return ApiError(422, f"{name}: {exc}", name=name)
    if isinstance(exc, DecodeLimitError) or any(
        s in message for s in ("more than the limit", "too large to decode", "elongated")
    ):
        status = 413
    elif "not a readable image" in message or "not supported" in message or "mode" in message:
        status = 415
    else:
        status = 400
    return ApiError(status, f"{name}: {message}", name=name)


#: Longest echo of a client's input in a 422 body.
MAX_ECHO = 200


def _short(value: Any) -> Any:
    """``value`` as sent back in a 422: short strings and numbers as they are, anything else
    cut to :data:`MAX_ECHO` characters of its text."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}... ({len(text)} characters)"


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors with the echoed input cut short (a 1 MB field must not
    come back as a 6 MB answer).

    Examples
    --------
    >>> validation_details([{"loc": ["query", "explain"], "msg": "bad", "input": "x" * 10**6}])
    ... # doctest: +ELLIPSIS
    [{'loc': ['query', 'explain'], 'msg': 'bad', 'input': 'xxx...x... (1000000 characters)'}]
    """
    out = []
    for error in list(errors)[:20]:
        item = {key: error[key] for key in ("type", "loc", "msg") if key in error}
        item["loc"] = [_short(part) for part in item.get("loc", [])]
        if "msg" in item:
            item["msg"] = _short(item["msg"])
        if "input" in error:
            item["input"] = _short(error["input"])
        out.append(item)
    return out


#: What each multipart field of the API holds, for the 422 of a request without it.
UPLOAD_FIELDS = {
    "file": "one image: -F file=@image.png",
    "files": "images and/or zips, one field each: -F files=@a.png -F files=@b.zip",
}


def _sent_fields(body: Any) -> str:
    """The multipart field names a request sent, for a 422's message."""
    keys = getattr(body, "keys", None)
    names = sorted({str(key) for key in keys()}) if callable(keys) else []
    if not names:
        return "this request sent no multipart fields"
    shown = ", ".join(repr(_short(name)) for name in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"this request sent {shown}{more}"


def _describe(error: dict[str, Any], body: Any) -> str:
    loc = [str(part) for part in error.get("loc", [])]
    if error.get("type") == "missing" and len(loc) == 2 and loc[0] == "body":
        field = loc[1]
        what = UPLOAD_FIELDS.get(field)
        if what is not None:
            return f"missing the multipart field {field!r} ({what}); {_sent_fields(body)}"
        return f"missing the field {field!r}"
    return f"{'.'.join(loc)}: {error.get('msg', 'invalid')}"


def validation_summary(errors: list[dict[str, Any]], body: Any = None) -> str:
    """One line for a 422's ``detail`` (a string, as in every other error answer); the list
    itself goes under ``errors``. A missing upload field is named, with what it holds and the
    fields the request did send (``body``: its parsed form, when there is one).

    Examples
    --------
    >>> missing = {"type": "missing", "loc": ["body", "file"], "msg": "Field required"}
    >>> print(validation_summary([missing], {"image": None}))  # doctest: +NORMALIZE_WHITESPACE
    invalid request: missing the multipart field 'file' (one image: -F file=@image.png);
    this request sent 'image'
    >>> validation_summary([{"loc": ["query", "explain"], "msg": "not a boolean"}])
    'invalid request: query.explain: not a boolean'
    """
    parts = [_describe(error, body) for error in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "invalid request: " + ("; ".join(parts) or "malformed") + more


def install_error_handlers(app: Any) -> None:
    """JSON bodies for :class:`ApiError`, HTTP errors, validation errors (input cut short) and
    anything unexpected (logged, no trace)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    async def api_error(_request: Any, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    async def http_error(_request: Any, exc: HTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    async def invalid(_request: Any, exc: RequestValidationError) -> JSONResponse:
        errors = validation_details(exc.errors())
        summary = validation_summary(errors, getattr(exc, "body", None))
        return JSONResponse({"detail": summary, "errors": errors}, 422)

    async def unexpected(request: Any, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, unexpected)
