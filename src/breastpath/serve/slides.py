"""The slide viewer's routes (``breastpath serve --slides DIR``).

Pages: ``GET /slides`` (the slide list) and ``GET /slides/{id}`` (the viewer: OpenSeadragon over
the Deep Zoom tiles, with the model's overlays drawn from the tile records).

API:

* ``GET /api/slides``: every slide (``id``, ``name``, ``format``, ``width``, ``height``, ``mpp``,
  ``status``, ``verdict``, ``error``); ``GET /api/slides/{id}``: one of them.
* ``GET /api/slides/{id}.dzi`` and ``GET /api/slides/{id}_files/{level}/{col}_{row}.jpeg``: the
  standard Deep Zoom layout (254-pixel tiles, 1 pixel of overlap), so any DZI client works.
* ``GET /api/slides/{id}/thumbnail.jpeg``: the whole slide in at most 254 x 254 pixels.
* ``GET /api/slides/{id}/tiles``: the analysis: verdict, tile records (``x``, ``y``, ``size`` in
  level-0 pixels, ``probability`` or ``skipped``) and the ranked regions of called tiles.
* ``GET /api/slides/{id}/tiles.csv``, ``/tiles.geojson``: the result files, as downloads.
* ``POST /api/slides/{id}/analyze``: score the slide with the server's model in the background
  (:mod:`breastpath.serve.analyses`: one at a time, a bounded queue; 202 started or joined, 200
  already done and cached, 429 queue full, 503 no results folder, 409 slide not found);
  ``GET /api/slides/{id}/job``: its state and tiles done / total, tiles/s, ETA.

An unknown id, a level, column or row outside the slide, or a slide that cannot be opened is a
404; ids are looked up in the catalogue made at start-up, never used as paths. Encoded tiles are
kept in a byte-bounded LRU cache, and concurrent requests for one tile compute it once. Tile
routes are plain functions, so Starlette runs them in its worker threads, off the event loop.
"""

# No ``from __future__ import annotations``: FastAPI reads the route annotations at run time.

import io
from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from breastpath.errors import SlideError
from breastpath.serve.analyses import AnalysisUnavailable, CannotAnalyse, QueueFull, SlideAnalyses
from breastpath.serve.tilecache import TileCache
from breastpath.slide.catalog import SlideCatalog, UnknownSlide
from breastpath.slide.regions import called_regions

JPEG_QUALITY = 75
#: Tiles never change while the server runs; the browser may keep them for an hour.
TILE_HEADERS = {"Cache-Control": "private, max-age=3600"}
TILE_COLUMNS = ["x", "y", "size", "probability", "skipped", "row", "col"]
#: OpenSeadragon adds one fixed ``<style>`` (``data-openseadragon-mobile-css``) to the page; the
#: viewer's Content-Security-Policy allows exactly that text by its hash, and no other inline style.
OSD_STYLE_HASH = "'sha256-9xTiqzfwFaL2SGb1rmr8gysEwVVjIvqWAgmZgqFqpEE='"


def viewer_headers(page_headers: dict[str, str]) -> dict[str, str]:
    """``page_headers`` with OpenSeadragon's one inline style allowed by its hash.

    Examples
    --------
    >>> policy = viewer_headers({"Content-Security-Policy": "style-src 'self'"})
    >>> policy["Content-Security-Policy"] == f"style-src 'self' {OSD_STYLE_HASH}"
    True
    """
    policy = page_headers.get("Content-Security-Policy", "")
    policy = policy.replace("style-src 'self'", f"style-src 'self' {OSD_STYLE_HASH}")
    return {**page_headers, "Content-Security-Policy": policy}


def _page(name: str) -> str:
    path = resources.files("breastpath").joinpath("serve", "templates", name)
    return path.read_text(encoding="utf-8")


def _jpeg(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _not_found(exc: Exception) -> HTTPException:
    return HTTPException(status_code=404, detail=str(exc))


class SlideTiles:
    """Encoded Deep Zoom tiles of a catalogue's slides, through one bounded cache."""

    def __init__(self, catalog: SlideCatalog, *, cache_bytes: int = 128 * 2**20) -> None:
        self.catalog = catalog
        self.cache = TileCache(max_bytes=cache_bytes)

    def dzi(self, slide_id: str) -> str:
        with self.catalog.deepzoom(slide_id) as dz:
            return dz.get_dzi("jpeg")

    def tile(self, slide_id: str, level: int, col: int, row: int) -> bytes:
        self.catalog.get(slide_id)  # an unknown id is never a cache key

        def make() -> bytes:
            with self.catalog.deepzoom(slide_id) as dz:
                if not 0 <= level < dz.level_count:
                    raise UnknownSlide(f"no level {level}; the slide has 0..{dz.level_count - 1}")
                cols, rows = dz.level_tiles[level]
                if not (0 <= col < cols and 0 <= row < rows):
                    raise UnknownSlide(f"no tile {col}_{row} at level {level} ({cols}x{rows})")
                return _jpeg(dz.get_tile(level, (col, row)))

        return self.cache.get((slide_id, level, col, row), make)

    def thumbnail(self, slide_id: str) -> bytes:
        """The deepest Deep Zoom level that fits one tile."""
        with self.catalog.deepzoom(slide_id) as dz:
            fits = [i for i, t in enumerate(dz.level_tiles) if t == (1, 1)]
            level = max(fits) if fits else 0
        return self.tile(slide_id, level, 0, 0)


def analysis(catalog: SlideCatalog, slide_id: str) -> dict[str, Any]:
    """The verdict, the tile records and the ranked regions of an analysed slide."""
    summary = catalog.summary(slide_id)
    if summary is None:
        raise UnknownSlide(f"slide {slide_id!r} has not been analysed")
    verdict = summary.get("verdict") or {}
    records = catalog.tiles(slide_id)
    threshold = verdict.get("threshold")
    regions = called_regions(records, threshold=threshold) if threshold is not None else []
    return {
        "id": slide_id,
        "verdict": verdict,
        "notes": summary.get("notes") or [],
        "tiling": summary.get("tiling") or {},
        "model": {k: (summary.get("model") or {}).get(k) for k in ("name", "version")},
        "columns": TILE_COLUMNS,
        "tiles": [[r[k] for k in TILE_COLUMNS] for r in records],
        "regions": regions,
    }


def _availability(analyses: SlideAnalyses | None) -> dict[str, Any]:
    """Whether slides can be analysed from the page, and why not."""
    if analyses is None:
        return {"available": False, "reason": "this server does not analyse slides"}
    if analyses.results is None:
        return {"available": False, "reason": analyses.unavailable}
    return {"available": True, "reason": None}


def _download(catalog: SlideCatalog, name: str, media: str) -> Any:
    def download(slide_id: str) -> FileResponse:
        try:
            path = catalog.result_file(slide_id, name)
        except SlideError as exc:
            raise _not_found(exc) from None
        return FileResponse(path, media_type=media, filename=f"{slide_id}-{name}")

    return download


def _job_error(exc: SlideError) -> HTTPException:
    if isinstance(exc, QueueFull):
        return HTTPException(status_code=429, detail=str(exc), headers={"Retry-After": "10"})
    if isinstance(exc, AnalysisUnavailable):
        return HTTPException(status_code=503, detail=str(exc))
    if isinstance(exc, CannotAnalyse):
        return HTTPException(status_code=409, detail=str(exc))
    return _not_found(exc)


def _analysis_routes(router: APIRouter, analyses: SlideAnalyses) -> None:
    @router.post("/api/slides/{slide_id}/analyze", summary="Score a slide in the background")
    def analyze(slide_id: str) -> JSONResponse:
        try:
            job, cached = analyses.submit(slide_id)
        except SlideError as exc:
            raise _job_error(exc) from None
        return JSONResponse(job, status_code=200 if cached else 202)

    @router.get("/api/slides/{slide_id}/job", summary="Progress of a slide's analysis")
    def job(slide_id: str) -> dict[str, Any]:
        try:
            return analyses.job(slide_id)
        except SlideError as exc:
            raise _not_found(exc) from None


def slides_router(
    catalog: SlideCatalog,
    page_headers: dict[str, str],
    analyses: SlideAnalyses | None = None,
) -> APIRouter:
    """The viewer's pages and API over ``catalog`` (with ``analyses``: analysis from the page)."""
    router = APIRouter()
    if analyses is not None:
        _analysis_routes(router, analyses)
    tiles = SlideTiles(catalog)
    list_page, viewer_page = _page("slides.html"), _page("slide_viewer.html")
    viewer_page_headers = viewer_headers(page_headers)

    @router.get("/slides", response_class=HTMLResponse, include_in_schema=False)
    def slide_list() -> HTMLResponse:
        return HTMLResponse(list_page, headers=page_headers)

    @router.get("/slides/{slide_id}", response_class=HTMLResponse, include_in_schema=False)
    def slide_viewer(slide_id: str) -> HTMLResponse:
        try:
            catalog.get(slide_id)
        except UnknownSlide as exc:
            raise _not_found(exc) from None
        return HTMLResponse(viewer_page, headers=viewer_page_headers)

    @router.get("/api/slides", summary="The slides: size, format, mpp, analysis status")
    def list_slides() -> dict[str, Any]:
        return {
            "slides": catalog.listing(),
            "cohort": catalog.cohort,
            "cache": tiles.cache.stats(),
            "analysis": _availability(analyses),
        }

    @router.get("/api/slides/{slide_id}.dzi", summary="Deep Zoom descriptor of a slide")
    def dzi(slide_id: str) -> Response:
        try:
            return Response(tiles.dzi(slide_id), media_type="application/xml")
        except SlideError as exc:
            raise _not_found(exc) from None

    @router.get(
        "/api/slides/{slide_id}_files/{level:int}/{col:int}_{row:int}.jpeg",
        summary="One Deep Zoom tile",
        response_class=Response,
    )
    def dzi_tile(slide_id: str, level: int, col: int, row: int) -> Response:
        try:
            body = tiles.tile(slide_id, level, col, row)
        except SlideError as exc:
            raise _not_found(exc) from None
        return Response(body, media_type="image/jpeg", headers=TILE_HEADERS)

    @router.get("/api/slides/{slide_id}/thumbnail.jpeg", summary="A small picture of the slide")
    def thumbnail(slide_id: str) -> Response:
        try:
            body = tiles.thumbnail(slide_id)
        except SlideError as exc:
            raise _not_found(exc) from None
        return Response(body, media_type="image/jpeg", headers=TILE_HEADERS)

    @router.get("/api/slides/{slide_id}/tiles", summary="Verdict, tile records and regions")
    def slide_tiles(slide_id: str) -> dict[str, Any]:
        try:
            return analysis(catalog, slide_id)
        except SlideError as exc:
            raise _not_found(exc) from None

    for name, media in (("tiles.csv", "text/csv"), ("tiles.geojson", "application/geo+json")):
        router.add_api_route(
            f"/api/slides/{{slide_id}}/{name}",
            _download(catalog, name, media),
            methods=["GET"],
            summary=f"The slide's {name} (a download)",
        )

    @router.get("/api/slides/{slide_id}", summary="One slide: size, format, mpp, verdict")
    def one_slide(slide_id: str) -> dict[str, Any]:
        try:
            return {**catalog.describe(slide_id), "analysis": _availability(analyses)}
        except SlideError as exc:
            raise _not_found(exc) from None

    return router
