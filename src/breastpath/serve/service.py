"""From uploads to JSON results: decode, tile, score (batched), explain.

CPU work on pixels runs in worker threads and model work on the inference thread of
:class:`~breastpath.serve.engine.InferenceEngine`, so the event loop only moves bytes.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from breastpath.errors import MagnificationError
from breastpath.imaging import probe_size
from breastpath.inference.magnification import check_magnification, magnification_of
from breastpath.inference.predictor import Predictor
from breastpath.inference.quality import Quality, fill_class_table
from breastpath.inference.tiles import (
    ImageTiles,
    cut_tiles,
    needs_tiling,
    tile_count,
    tile_summary,
)
from breastpath.sandbox import DecodeSandbox, inline_bytes
from breastpath.serve import explain as explaining
from breastpath.serve.engine import InferenceEngine, PixelGate
from breastpath.serve.errors import image_error
from breastpath.serve.explain_queue import ExplainQueue, Turn
from breastpath.serve.fields import api_quality
from breastpath.serve.limits import ServeLimits
from breastpath.serve.uploads import Upload, decode_upload_info

#: Decode worker processes of a server (the gate lets one full-size image decode at a time).
DECODE_WORKERS = 2
#: Images decoded after which the quality gate's colour table (16 MiB, about a second of CPU)
#: is filled in a thread: from then on each image's colour classes are lookups, a tenth of the
#: gate's cost on a 50x50 patch (short-lived apps, tests among them, never pay for it).
COLOUR_TABLE_AFTER = 256


@dataclass
class Decoded:
    """An upload ready for the model."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 as uploaded; shape only once released (batch items)
    model_input: np.ndarray  # (h, w, 3) uint8 at the input size (fit_to_size)
    action: str  # what fit_to_size did
    grid: ImageTiles | None
    note: str | None
    seconds: float
    quality: Quality | None = None  # the input-quality gate's verdict on the whole image
    force: bool = False  # label it even when the gate flags it (research only)


def release_pixels(item: Decoded) -> None:
    """Drop an item's full-size pixels once it is reduced (model input and tiles made): its
    ``image`` keeps its shape as a one-pixel broadcast view (a batch holds reduced items
    only)."""
    first = np.array(item.image[:1, :1])
    item.image = np.broadcast_to(first, item.image.shape)


async def decode_gated(
    service: PredictionService, upload: Upload, *, tiles_left: int | None = None
) -> Decoded:
    """``service.decode`` in a thread, holding the image's pixels (read from its header in a
    thread too) of the server-wide gate until the decode ends; a cancelled caller stops it."""
    size = await run_in_threadpool(probe_size, upload.data)
    cancel = threading.Event()
    call = functools.partial(service.decode, upload, tiles_left=tiles_left, cancel=cancel)
    return await service.decode_gate.run(
        size[0] * size[1] if size else 0, call, on_cancel=cancel.set
    )


class PredictionService:
    """Score uploads with a shared :class:`Predictor` (one per app).

    Parameters
    ----------
    predictor
        The loaded model.
    limits
        Request limits.
    stain
        A fitted stain normalizer for the explanation view (default: the checkpoint's, if any).
    """

    def __init__(self, predictor: Predictor, limits: ServeLimits, *, stain: Any = None) -> None:
        self.predictor = predictor
        self.limits = limits
        self.engine = InferenceEngine(predictor, limits)
        #: pixels decoded at once, server-wide (one image of the largest size at a time)
        self.decode_gate = PixelGate(limits.max_pixels)
        #: worker processes that decode uploads under hard limits (started when first needed)
        self.sandbox = DecodeSandbox(
            workers=DECODE_WORKERS, max_pixels=limits.max_pixels, wall_seconds=limits.timeout_s
        )
        #: Grad-CAM's own threads and queue, apart from :attr:`engine` (see ExplainQueue)
        self.explainer = ExplainQueue(limits)
        self.stain, self.stain_note = explaining.resolve_stain(predictor.meta, stain)
        self._decoded = 0  # images decoded until the colour table is filled (COLOUR_TABLE_AFTER)

    # ------------------------------------------------------------------ decoding
    def decode(
        self,
        upload: Upload,
        *,
        tiles_left: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Decoded:
        """Decode (in :attr:`sandbox`) and prepare one upload (raises a 4xx :class:`ApiError`).

        ``tiles_left``: what is left of the request's tile budget (``max_request_tiles``); an
        image that needs more tiles is scored whole, with a note. ``cancel``: stops the decode.
        """
        started = time.perf_counter()
        self._check_magnification(upload)
        decoded = decode_upload_info(
            upload, max_pixels=self.limits.max_pixels, sandbox=self.sandbox, cancel=cancel
        )
        image = decoded.pixels
        if self._decoded <= COLOUR_TABLE_AFTER:
            self._decoded += 1
            if self._decoded > COLOUR_TABLE_AFTER:
                fill_class_table()  # at most once more if two threads race here: harmless
        quality = self.predictor.assess([image])[0]
        model_input, action = self.predictor.prepare_one(image)
        grid, notes = self._tile_grid(image, tiles_left=tiles_left)
        notes = [decoded.note, *notes] if decoded.note else notes
        note = "; ".join(notes) or None
        seconds = time.perf_counter() - started
        return Decoded(upload.name, image, model_input, action, grid, note, seconds, quality)

    def _tile_grid(
        self, image: np.ndarray, *, tiles_left: int | None
    ) -> tuple[ImageTiles | None, list[str]]:
        """The tile map of an image larger than the input (None when there is none), and why
        there is none: too many tiles, or a model that scores whole fields only."""
        predictor = self.predictor
        if not needs_tiling(image.shape, predictor.input_size):
            return None, []
        th, tw = predictor.input_size
        if predictor.meta.input_fit == "stretch":
            return None, [
                f"no tile map: this model scores whole fields (its training images were whole "
                f"fields resized to {tw}x{th}), not tiles at the image's own resolution"
            ]
        count = tile_count(image.shape, predictor.input_size)
        if count > self.limits.max_tiles:
            return None, [
                f"no tile map: the image would need {count} tiles of {tw}x{th}, "
                f"more than the limit of {self.limits.max_tiles}"
            ]
        if tiles_left is not None and count > tiles_left:
            return None, [
                f"no tile map: the image would need {count} tiles of {tw}x{th} and this "
                f"request has {max(tiles_left, 0)} left of its limit of "
                f"{self.limits.max_request_tiles}"
            ]
        grid = cut_tiles(image, predictor.input_size).check()
        grid.tiles = predictor.normalize_stain(grid.tiles)
        return grid, []

    def _check_magnification(self, upload: Upload) -> None:
        """A 422 before decoding when the upload's magnification (stated, else in its name)
        is not the model's, unless the request allows it (research only)."""
        if upload.allow_magnification:
            return
        declared = upload.magnification or magnification_of(upload.name)
        try:
            check_magnification(self.predictor.meta.data, declared)
        except MagnificationError as exc:
            raise image_error(exc, upload.name) from None

    async def decode_async(self, upload: Upload, *, tiles_left: int | None = None) -> Decoded:
        """:meth:`decode` in a worker thread, within the server-wide :attr:`decode_gate`, held
        until the decode has ended even when the client leaves (which stops the decode); small
        patches on the event loop (cheaper than a thread hop; their cost is bounded)."""
        if inline_bytes(upload.data):
            return self.decode(upload, tiles_left=tiles_left)
        return await decode_gated(self, upload, tiles_left=tiles_left)

    # ------------------------------------------------------------------ results
    def _result(self, item: Decoded, probs: np.ndarray) -> dict[str, Any]:
        """JSON result of one image from its rows of probabilities (whole image, then tiles)."""
        predictor = self.predictor
        verdict = None if item.quality is None else [item.quality]
        prediction = predictor.to_predictions(probs[:1], verdict, allow_non_tissue=item.force)[0]
        height, width = item.image.shape[:2]
        result: dict[str, Any] = {
            "filename": item.name,
            **prediction.to_dict(),
            "quality": api_quality(prediction.quality),
            "threshold": predictor.threshold,
            "image": {"width": width, "height": height},
            "preprocessing": item.action,
            "tiles": None,
        }
        if item.grid is not None:
            tiles = tile_summary(
                item.grid, predictor.cancer_probability(probs[1:]), rule=predictor.verdict_rule()
            )
            if prediction.label is None:  # the image is not H&E tissue: no tile verdict either
                tiles["is_cancer"] = tiles["label"] = None
            result["tiles"] = tiles
        if item.note:
            result["note"] = item.note
        return result

    async def _score(self, items: list[Decoded]) -> list[np.ndarray]:
        """Whole-image and tile probabilities of several images in one model job."""
        parts = []
        for item in items:
            parts.append(item.model_input[None])
            if item.grid is not None:
                parts.append(item.grid.tiles)
        probs = await self.engine.predict_proba(np.concatenate(parts))  # a fresh, writable copy
        out, start = [], 0
        for item in items:
            n = 1 + (item.grid.count if item.grid is not None else 0)
            out.append(probs[start : start + n])
            start += n
        return out

    # ------------------------------------------------------------------ endpoints
    async def predict_one(
        self, upload: Upload, *, explain: bool = False, force: bool = False
    ) -> dict[str, Any]:
        """Result for one upload; ``explain`` adds Grad-CAM, tile map and stain view (in a turn
        of :attr:`explainer` taken on arrival: 503 with ``Retry-After`` when none is free);
        ``force`` labels an image the quality gate flags (research only)."""
        if not (explain and self.predictor.can_explain):
            return await self._predict(upload, force=force, explain=explain)
        async with self.explainer.turn() as turn:
            return await self._predict(upload, force=force, explain=True, turn=turn)

    async def _predict(
        self, upload: Upload, *, force: bool, explain: bool, turn: Turn | None = None
    ) -> dict[str, Any]:
        started = time.perf_counter()
        item = await self.decode_async(upload)
        item.force = force
        model_start = time.perf_counter()
        probs = (await self._score([item]))[0]
        result = self._result(item, probs)
        timing = {"decode": item.seconds, "model": time.perf_counter() - model_start}
        if explain:
            explain_start = time.perf_counter()
            result["explain"] = await self._explain(item, probs, result, turn)
            timing["explain"] = time.perf_counter() - explain_start
        result["model"] = self.predictor.describe()
        result["seconds"] = round(time.perf_counter() - started, 4)
        result["timing"] = {k: round(v, 4) for k, v in timing.items()}
        return result

    async def _explain(
        self,
        item: Decoded,
        probs: np.ndarray,
        answer: dict[str, Any],
        turn: Turn | None,
    ) -> dict[str, Any]:
        """The ``explain`` block, computed in ``turn`` (of :attr:`explainer`: its own threads);
        Grad-CAM covers at most ``max_explain_tiles`` tiles, an image with more is explained on
        the model's input. ``answer``: the result so far (its tile map; its label, None when the
        image is not assessed, which greys out every tile of the map)."""
        predictor = self.predictor
        if not predictor.can_explain:
            return {
                "available": False,
                "reason": "explanation unavailable: Grad-CAM needs the torch weights and this "
                "model is an exported ONNX file",
            }
        target = predictor.explain_target(probs[:1])[0]
        grid, note = item.grid, None
        if grid is not None and grid.count > self.limits.max_explain_tiles:
            note = (
                f"Grad-CAM on the model's input, not tile by tile: the image has {grid.count} "
                f"tiles, more than the limit of {self.limits.max_explain_tiles} per explanation"
            )
            grid = None
        batch = grid.tiles if grid is not None else item.model_input[None]

        def work(cancel: threading.Event) -> dict[str, Any] | None:
            cams = explaining.chunked_grad_cam(predictor, batch, target=target, cancel=cancel)
            if cams is None:
                return None  # the client left
            base, heat, shown = explaining.gradcam_map(
                cams, image=item.image, model_input=item.model_input, action=item.action, grid=grid
            )
            stain = explaining.stain_view(self.stain, item.image, self.stain_note)
            block = explaining.render_explanation(
                image=item.image,
                base=base,
                heat=heat,
                shown=shown,
                target=predictor.class_names[target],
                tiles=answer["tiles"],
                grid=item.grid,
                stain=stain,
                image_assessed=answer["label"] is not None,
            )
            block["note"] = "; ".join(n for n in (block["note"], note) if n) or None
            return block

        result = await (turn.run(work) if turn is not None else self.explainer.run(work))
        assert result is not None  # None only for a caller that has left
        return result
