"""The JSON API: ``/api/predict``, ``/api/predict/batch``, ``/api/models``, ``/api/health``.

Every error is a JSON ``{"detail": ...}`` with a 4xx status (413 too large, 415 not an image or
an unsupported mode, 400 corrupt or empty, 422 missing field, 503 busy, 504 timeout).
"""

# No ``from __future__ import annotations``: FastAPI must see the real ``UploadFile`` annotations.

import time
from typing import Any

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse

from breastpath.serve.errors import ApiError
from breastpath.serve.modelcard import model_card_markdown
from breastpath.serve.service import PredictionService
from breastpath.serve.uploads import Upload, expand_zip, is_zip, read_upload


class MarkdownResponse(PlainTextResponse):
    """A UTF-8 Markdown body, documented as ``text/markdown`` in the OpenAPI spec."""

    media_type = "text/markdown"


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"detail": text}}}}
    for code, text in (
        (400, "empty, corrupt or truncated upload"),
        (413, "upload, image or batch over a limit"),
        (415, "not an image, or an unsupported image mode"),
        (503, "server busy: too many requests waiting for the model"),
        (504, "the model did not answer in time"),
    )
}


def api_router(service: PredictionService) -> APIRouter:
    """The API routes around one :class:`PredictionService`."""
    router = APIRouter(prefix="/api")
    predictor, limits = service.predictor, service.limits

    @router.get("/health", summary="Liveness")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": predictor.name}

    @router.get("/models", summary="The loaded model, the limits and the explanation options")
    def models() -> dict[str, Any]:
        return {
            "models": [predictor.describe()],
            "limits": limits.to_dict(),
            "explain": {
                "gradcam": True,
                "stain": service.stain is not None,
                "stain_note": service.stain_note,
            },
            "queue": {"pending": service.engine.pending, **service.engine.stats},
        }

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
        file: UploadFile = File(..., description="PNG, JPEG, TIFF or BMP image"),  # noqa: B008
        explain: bool = Query(
            False, description="add a Grad-CAM overlay, a tile map and a stain-normalized view"
        ),
    ) -> JSONResponse:
        upload = await read_upload(file, limit=limits.max_upload_bytes)
        return JSONResponse(await service.predict_one(upload, explain=explain))

    @router.post(
        "/predict/batch",
        summary="Cancer probabilities of several images, or of the images in a zip",
        response_class=JSONResponse,
        responses=_ERRORS,
    )
    async def predict_batch(
        files: list[UploadFile] = File(..., description="images and/or zip archives"),  # noqa: B008
    ) -> JSONResponse:
        started = time.perf_counter()
        if len(files) > limits.max_files:
            raise ApiError(413, f"{len(files)} files, more than the limit of {limits.max_files}")
        uploads: list[Upload | ApiError] = []
        for number, file in enumerate(files, start=1):
            try:
                upload = await read_upload(
                    file, limit=limits.max_batch_bytes, fallback=f"file {number}"
                )
            except ApiError as exc:
                uploads.append(exc)
                continue
            if is_zip(upload.data):
                uploads.extend(expand_zip(upload, limits))
            elif len(upload.data) > limits.max_upload_bytes:
                detail = f"{upload.name}: upload larger than {limits.max_upload_bytes} bytes"
                uploads.append(ApiError(413, detail, name=upload.name))
            else:
                uploads.append(upload)
        if len(uploads) > limits.max_files:
            raise ApiError(
                413,
                f"{len(uploads)} images in this batch, more than the limit of {limits.max_files}",
            )
        results = await service.predict_many(uploads)
        good = [r for r in results if r["ok"]]
        return JSONResponse(
            {
                "results": results,
                "summary": {
                    "files": len(results),
                    "ok": len(good),
                    "failed": len(results) - len(good),
                    "cancer": sum(bool(r["is_cancer"]) for r in good),
                },
                "threshold": predictor.threshold,
                "model": predictor.describe(),
                "seconds": round(time.perf_counter() - started, 4),
            }
        )

    return router
