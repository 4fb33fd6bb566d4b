"""HTTP errors of the web app: every failure is a JSON ``{"detail": ...}``, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from breastpath.errors import InvalidImageError

log = logging.getLogger("breastpath.serve")


class ApiError(Exception):
    """An error with an HTTP status and a message for the client.

    Examples
    --------
    >>> ApiError(415, "notes.txt: not a readable image").status
    415
    """

    def __init__(self, status: int, detail: str, *, name: str | None = None) -> None:
        super().__init__(detail)
        self.status = int(status)
        self.detail = str(detail)
        self.name = name  # the file it is about, if any

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail}


def image_error(exc: InvalidImageError, name: str) -> ApiError:
    """Turn a decoding error into a 4xx: 413 too large, 415 not an image or mode, 400 otherwise."""
    message = str(exc).split(": ", 1)[-1]
    if "more than the limit" in message or "too large to decode" in message:
        status = 413
    elif "not a readable image" in message or "not supported" in message or "mode" in message:
        status = 415
    else:
        status = 400
    return ApiError(status, f"{name}: {message}", name=name)


def install_error_handlers(app: Any) -> None:
    """JSON bodies for :class:`ApiError`, HTTP errors and anything unexpected (logged, no trace)."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    async def api_error(_request: Any, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    async def http_error(_request: Any, exc: HTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    async def unexpected(request: Any, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
