"""The HTTP API and the upload page (FastAPI).

``create_app(predictor)`` returns an app with:

* ``GET /`` — a page: choose or drop an image, see the cancer probability;
* ``POST /api/predict`` — multipart ``file`` -> JSON probability, label, threshold, model, timing;
* ``GET /api/health`` and ``GET /api/models``.

Requests whose declared size is over the limit are refused (413) before their body is read.
Uploads are never saved under a user-supplied name: the multipart parser keeps them in memory, or
above 1 MB in an anonymous temporary file. They are size-limited and decoded (off the event loop)
by the shared :func:`breastpath.imaging.decode_image`; bad input is an HTTP 4xx with a JSON
``detail``.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``UploadFile``
# annotation of the route defined inside ``create_app``, not an unresolvable string.

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from breastpath.errors import InvalidImageError
from breastpath.imaging import decode_image
from breastpath.serve.predictor import Predictor


@dataclass(frozen=True)
class ServeLimits:
    """Limits applied to every upload."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 8192 * 8192


def create_app(predictor: Predictor, *, limits: ServeLimits = ServeLimits()):
    """Build the FastAPI application around a loaded :class:`Predictor`."""
    from fastapi import FastAPI, File, HTTPException, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse

    import breastpath

    app = FastAPI(
        title="breastpath",
        version=breastpath.__version__,
        description="Cancer probability for breast histopathology images.",
    )
    page = (resources.files("breastpath") / "serve" / "templates" / "index.html").read_text(
        encoding="utf-8"
    )

    multipart_overhead = 64 * 1024

    @app.middleware("http")
    async def refuse_oversized(request, call_next):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_upload_bytes + multipart_overhead:
            return JSONResponse(
                {"detail": f"upload larger than {limits.max_upload_bytes} bytes"}, status_code=413
            )
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": predictor.name}

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        return {"models": [predictor.describe()]}

    @app.post("/api/predict")
    async def predict(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
        started = time.perf_counter()
        data = await file.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(413, f"upload larger than {limits.max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "empty upload")
        try:
            image = await run_in_threadpool(decode_image, data, max_pixels=limits.max_pixels)
        except InvalidImageError as exc:
            message = str(exc).split(": ", 1)[-1]
            raise HTTPException(
                415 if "not a readable image" in message else 400,
                f"{file.filename or 'upload'}: {message}",
            ) from None
        result = (await run_in_threadpool(predictor.predict_images, [image]))[0]
        return {
            **result.to_dict(),
            "threshold": predictor.threshold,
            "model": predictor.describe(),
            "image": {"width": image.shape[1], "height": image.shape[0]},
            "seconds": round(time.perf_counter() - started, 4),
        }

    return app
