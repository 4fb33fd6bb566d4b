"""The JSON API: ``/api/predict``, ``/api/predict/batch``, ``/api/models``, ``/api/health``.

Every error is a JSON ``{"detail": "..."}`` (:class:`ErrorBody`; a 422 adds the list of
``errors``) with a 4xx status (413 too large, 415 not an image or an unsupported mode, 400
corrupt or empty, 408 body too slow, 422 missing field, 503 busy, 504 timeout), and the OpenAPI
document says so for every status, and what a request must hold (a non-empty ``file``; 1 to
``max_files`` ``files``). Every float of an answer is rounded to 6 decimals
(:mod:`breastpath.serve.fields`). Nothing here blocks the event loop: zips are opened, members
read and images decoded in worker threads, and large answers are rendered to JSON there too.
"""

# No ``from __future__ import annotations``: FastAPI must see the real ``UploadFile`` annotations.

import json
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from breastpath.serve.batch import predict_batch as run_batch
from breastpath.serve.fields import rounded
from breastpath.serve.memory import LARGE_REQUEST_BYTES, LARGE_REQUEST_PIXELS, release_memory
from breastpath.serve.modelcard import model_card_markdown
from breastpath.serve.service import PredictionService
from breastpath.serve.uploads import read_upload


class MarkdownResponse(PlainTextResponse):
    """A UTF-8 Markdown body, documented as ``text/markdown`` in the OpenAPI spec."""

    media_type = "text/markdown"


class ErrorBody(BaseModel):
    """The body of every error answer."""

    detail: str
    errors: list[dict[str, Any]] | None = None  # a 422's fields, one entry each


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": text,
        "model": ErrorBody,
        "content": {"application/json": {"example": {"detail": text}}},
    }
    for code, text in (
        (400, "empty, corrupt or truncated upload"),
        (408, "the request body did not arrive in time"),
        (413, "upload, image or batch over a limit"),
        (415, "not an image, or an unsupported image mode"),
        (422, "a required field is missing or has the wrong type (listed under errors)"),
        (
            503,
            "server busy: too many requests waiting for the model, or explanations busy "
            "(with Retry-After)",
        ),
        (504, "the model did not answer in time"),
    )
}


def api_router(service: PredictionService) -> APIRouter:
    """The API routes around one :class:`PredictionService`."""
    router = APIRouter(prefix="/api")
    predictor, limits = service.predictor, service.limits

    # async: answered on the event loop itself, so its latency is the loop's responsiveness
    @router.head("/health", include_in_schema=False)
    @router.get("/health", summary="Liveness")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": predictor.name}

    @router.get("/models", summary="The loaded model, the limits and the explanation options")
    def models() -> dict[str, Any]:
        return rounded(
            {
                "models": [predictor.describe()],
                "limits": limits.to_dict(),
                "explain": {
                    "gradcam": True,
                    "stain": service.stain is not None,
                    "stain_note": service.stain_note,
                    "queue": {
                        "running": service.explainer.running,
                        "waiting": service.explainer.waiting,
                        **service.explainer.stats,
                    },
                },
                "queue": {"pending": service.engine.pending, **service.engine.stats},
            }
        )

    @router.get("/model-card", summary="The model card (Markdown)", response_class=MarkdownResponse)
    def model_card() -> MarkdownResponse:
        return MarkdownResponse(
            model_card_markdown(predictor.checkpoint.path, predictor.describe())
        )

    @router.post(
        "/predict",
        summary="Cancer probability of one image",
        response_class=JSONResponse,
        responses=_ERRORS,
    )
    async def predict(
        file: UploadFile = File(  # noqa: B008
            ...,
            description="PNG, JPEG, TIFF or BMP image (an empty file is a 400)",
            json_schema_extra={"minLength": 1},
        ),
        explain: bool = Query(
            False, description="add a Grad-CAM overlay, a tile map and a stain-normalized view"
        ),
        force: bool = Query(
            False,
            description="RESEARCH ONLY: give a label even when the input-quality gate says the "
            "image is not H&E tissue, or its magnification is not the model's (the result is "
            "marked forced)",
        ),
        magnification: Literal["40", "100", "200", "400"] | None = Query(
            None,
            description="the image's magnification (X); else its BreakHis file name's. An "
            "image at another magnification than the model's training images is a 422",
        ),
    ) -> Response:
        upload = await read_upload(file, limit=limits.max_upload_bytes)
        upload = replace(upload, magnification=magnification, allow_magnification=force)
        result = await service.predict_one(upload, explain=explain, force=force)
        size = result.get("image") or {}
        large = size.get("width", 0) * size.get("height", 0) >= LARGE_REQUEST_PIXELS
        return JSONResponse(
            rounded(result), background=BackgroundTask(release_memory) if large else None
        )

    @router.post(
        "/predict/batch",
        summary="Cancer probabilities of several images, or of the images in a zip",
        response_class=JSONResponse,
        responses=_ERRORS,
    )
    async def predict_batch(
        files: list[UploadFile] = File(  # noqa: B008
            ...,
            description=f"images and/or zip archives, 1 to {limits.max_files} (none: 422; more: "
            "413); each gets its own result line, an empty or unreadable one its 4xx",
            json_schema_extra={"minItems": 1, "maxItems": limits.max_files},
        ),
        force: bool = Query(
            False,
            description="RESEARCH ONLY: give a cancer label even where the input-quality gate "
            "says an image is not H&E tissue (those results stay marked assessed: false)",
        ),
    ) -> Response:
        payload = await run_batch(service, files, force=force)
        body = await run_in_threadpool(_render, payload)
        used = payload["used"]
        large = used["pixels"] >= LARGE_REQUEST_PIXELS or used["bytes"] >= LARGE_REQUEST_BYTES
        return Response(
            body,
            media_type="application/json",
            background=BackgroundTask(release_memory) if large else None,
        )

    return router


def _dumps(value: Any) -> str:
    """JSON text of ``value`` with the API's one rounding rule (:func:`rounded`)."""
    return json.dumps(rounded(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _render(payload: dict[str, Any]) -> bytes:
    """JSON bytes of a batch answer, as Starlette's ``JSONResponse`` renders them, one result at a
    time: ``json.dumps`` holds the interpreter lock while it runs, and one call over 64 results
    with 8,192 tile scores would hold it (and the event loop) for tens of milliseconds.

    Examples
    --------
    >>> _render({"results": [{"a": 1}, {"b": [2]}], "summary": {"files": 2}})
    b'{"results":[{"a":1},{"b":[2]}],"summary":{"files":2}}'
    """
    rest = {key: value for key, value in payload.items() if key != "results"}
    results = ",".join(_dumps(result) for result in payload["results"])
    tail = _dumps(rest)[1:] if rest else "}"
    return ('{"results":[' + results + "]" + ("," if rest else "") + tail).encode("utf-8")
