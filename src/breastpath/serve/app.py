"""The web app: the upload page, the model card and the HTTP API (FastAPI).

``create_app(predictor)`` returns an app with:

* ``GET /`` — the page: drop or choose one or many images (or a zip), see the probability, the
  label, the Grad-CAM overlay, the tile map and the stain-normalized view; a batch table with a
  CSV download. Its script and style are served from ``/static``; nothing is fetched elsewhere.
* ``GET /model-card`` (HTML) and ``GET /api/model-card`` (Markdown).
* ``POST /api/predict[?explain=true]``, ``POST /api/predict/batch``, ``GET /api/models``,
  ``GET|HEAD /api/health`` (see :mod:`breastpath.serve.routes`); the OpenAPI document at
  ``/openapi.json``, and ``GET /docs``: that document as a plain HTML page rendered here
  (:mod:`breastpath.serve.apidocs`; FastAPI's Swagger UI would load its scripts from a CDN).

Request bodies over the limits are refused with 413 before or while they are read, bodies
slower than ``body_timeout_s`` with 408, and a request whose client leaves is cancelled
(:class:`~breastpath.serve.middleware.RequestGuard`). Uploads are never saved under a
user-supplied name: the multipart parser keeps them in memory, or above 1 MB in an anonymous
temporary file. All errors are JSON; bad input is a 4xx, never a 500 or a stack trace.
"""

# No ``from __future__ import annotations``: FastAPI reads the route annotations at run time.

import contextlib
import gc
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from breastpath.inference.predictor import Predictor
from breastpath.serve.errors import install_error_handlers
from breastpath.serve.limits import ServeLimits
from breastpath.serve.middleware import MULTIPART_OVERHEAD, RequestGuard

__all__ = ["ServeLimits", "create_app"]

#: The page and the model card may only load what this server serves (plus inline data: images).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _package_dir(*parts: str) -> str:
    return str(resources.files("breastpath").joinpath("serve", *parts))


def create_app(
    predictor: Predictor,
    *,
    limits: ServeLimits | None = None,
    stain: Any = None,
    slides: Any = None,
    analyses: Any = None,
    token: str | None = None,
) -> Any:
    """Build the FastAPI application around a loaded :class:`Predictor`.

    Parameters
    ----------
    predictor
        The model, loaded once and shared by all requests. With ``runtime="onnx"`` it scores with
        onnxruntime; Grad-CAM explanations still run on its torch copy of the same weights.
    limits
        Upload, image, batch, queue and timeout limits (default: :class:`ServeLimits`).
    stain
        A fitted stain normalizer for the explanation view; by default the checkpoint's, if it
        carries one.
    slides
        A :class:`~breastpath.slide.catalog.SlideCatalog`: adds the slide list (``/slides``),
        the viewer and their API (:mod:`breastpath.serve.slides`).
    analyses
        A :class:`~breastpath.serve.analyses.SlideAnalyses` over ``slides``: slides can be
        analysed from the page (``POST /api/slides/{id}/analyze``).
    token
        An access token: every route but ``/static`` and ``/api/health`` then needs it
        (:mod:`breastpath.serve.access`).

    Examples
    --------
    >>> app = create_app(Predictor.from_checkpoint("default"))  # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    import breastpath
    from breastpath.serve.modelcard import model_card_markdown, model_card_page
    from breastpath.serve.routes import api_router
    from breastpath.serve.service import PredictionService

    limits = limits or ServeLimits()
    service = PredictionService(predictor, limits, stain=stain)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        from PIL import Image

        Image.init()  # load Pillow's plugins now, not on the event loop at the first odd file
        # The model, torch and the app are a large heap of long-lived objects: a full garbage
        # collection that walks them stalls the event loop for about 0.3 s. Collect once now
        # and freeze what is left, so later collections only look at new objects.
        gc.collect()
        gc.freeze()
        yield
        await service.engine.stop()
        service.explainer.close()
        service.sandbox.close()
        if analyses is not None:
            analyses.close()
        if slides is not None:
            slides.close()

    app = FastAPI(
        title="breastpath",
        version=breastpath.__version__,
        description=(
            "Cancer probability for breast histopathology images, with Grad-CAM explanations. "
            "Research use only; not a diagnostic device."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    install_error_handlers(app)

    def body_limit(path: str) -> int:
        if path.rstrip("/").endswith("/batch"):
            return limits.max_batch_bytes + MULTIPART_OVERHEAD
        return limits.max_upload_bytes + MULTIPART_OVERHEAD

    def describe(path: str) -> str:
        if path.rstrip("/").endswith("/batch"):
            return f"batch larger than {limits.max_batch_bytes} bytes"
        return f"upload larger than {limits.max_upload_bytes} bytes"

    app.add_middleware(
        RequestGuard,
        limit_for=body_limit,
        describe=describe,
        body_timeout_s=limits.body_timeout_s,
    )
    if token is not None:
        from breastpath.serve.access import TokenGuard

        app.add_middleware(TokenGuard, token=token)
    app.include_router(api_router(service))
    if slides is not None:
        from breastpath.serve.slides import slides_router

        app.include_router(slides_router(slides, PAGE_HEADERS, analyses))
    app.mount("/static", StaticFiles(directory=_package_dir("static")), name="static")

    page = resources.files("breastpath").joinpath("serve", "templates", "index.html")
    page_html = page.read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page_html, headers=PAGE_HEADERS)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs() -> HTMLResponse:
        from breastpath.serve.apidocs import api_docs_page

        return HTMLResponse(api_docs_page(app.openapi()), headers=PAGE_HEADERS)

    @app.get("/model-card", response_class=HTMLResponse, include_in_schema=False)
    def model_card() -> HTMLResponse:
        text = model_card_markdown(predictor.checkpoint.path, predictor.describe())
        title = f"Model card: {predictor.name}"
        return HTMLResponse(model_card_page(text, title), headers=PAGE_HEADERS)

    return app
