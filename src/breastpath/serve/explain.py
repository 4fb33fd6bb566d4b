"""Explanations for ``?explain=true``: Grad-CAM overlay, tile heatmap and stain-normalized view.

The stain-normalized view needs a fitted normalizer: the one a checkpoint carries, or one fitted
at start-up (``breastpath serve --stain-target IMAGE``). Without one the response says so
instead of showing a picture (``stain.note``: why, without a "none:" prefix, as
``available: false`` already says so).
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import numpy as np

from breastpath.checkpoint import CheckpointMeta
from breastpath.inference.tiles import ImageTiles
from breastpath.serve import render

_STAIN_FORMAT = "breastpath.stain"

#: Most input pixels in one Grad-CAM pass (64 tiles of 50 x 50, 3 of 224 x 224): bounds the
#: memory the backward pass holds, and a hung-up client's explanation stops after one pass.
CHUNK_PIXELS = 64 * 50 * 50


def _find_stain_dict(meta: CheckpointMeta) -> dict[str, Any] | None:
    value = meta.stain
    return value if isinstance(value, dict) and value.get("format") == _STAIN_FORMAT else None


def resolve_stain(meta: CheckpointMeta, normalizer: Any = None) -> tuple[Any, str]:
    """The normalizer to show, and a sentence on where it comes from (or why there is none).

    Parameters
    ----------
    meta
        Checkpoint metadata.
    normalizer
        A fitted normalizer given at start-up; it wins over the checkpoint's.
    """
    if normalizer is not None:
        method = getattr(normalizer, "method", type(normalizer).__name__)
        return normalizer, f"{method}, fitted on the target image given at start-up"
    data = _find_stain_dict(meta)
    if data is None:
        return None, (
            "this checkpoint carries no fitted stain normalizer "
            "(start the server with --stain-target IMAGE to show one)"
        )
    from breastpath.stain import normalizer_from_dict

    try:
        fitted = normalizer_from_dict(data)
    except Exception as exc:  # a bad description must not stop the server
        return None, f"the checkpoint's stain normalizer could not be loaded ({exc})"
    return fitted, f"{fitted.method}, fitted on the training data (from the checkpoint)"


def fit_stain(method: str, images: list[np.ndarray]) -> Any:
    """Fit ``method`` on target images; raise :class:`~breastpath.errors.StainError` when
    impossible (no tissue, unknown method)."""
    from breastpath.stain import get_normalizer

    return get_normalizer(method).fit(images if len(images) > 1 else images[0])


def stain_view(normalizer: Any, image: np.ndarray, note: str) -> dict[str, Any]:
    """The stain-normalized image at display size, or why there is none."""
    if normalizer is None:
        return {"available": False, "method": None, "png": None, "note": note}
    small = image
    if max(image.shape[:2]) > render.MAX_SIDE:  # the view is for the eye: normalize what we show
        small = render.resize(image, render.display_size(*image.shape[:2]), smooth=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            normalized, changed = normalizer.transform(small, return_status=True)
    except Exception as exc:
        return {
            "available": False,
            "method": normalizer.method,
            "png": None,
            "note": f"stain normalization failed on this image ({exc})",
        }
    if not changed:
        note = f"{note}; left unchanged: too little tissue or a single colour"
    return {
        "available": True,
        "method": normalizer.method,
        "png": render.png_base64(render.for_display(np.asarray(normalized, dtype=np.uint8))),
        "note": note,
    }


def chunked_grad_cam(
    predictor: Any, batch: np.ndarray, *, target: int, cancel: threading.Event | None = None
) -> np.ndarray | None:
    """Raw Grad-CAM maps of ``batch`` (``(N, H, W, 3)`` uint8 at the input size), computed
    :data:`CHUNK_PIXELS` at a time; ``None`` when ``cancel`` was set (the client left).

    Examples
    --------
    >>> class Flat:
    ...     def grad_cam(self, chunk, *, target_class, normalize):
    ...         return np.ones(chunk.shape[:3], np.float32)
    >>> chunked_grad_cam(Flat(), np.zeros((130, 50, 50, 3), np.uint8), target=1).shape
    (130, 50, 50)
    """
    rows = max(1, CHUNK_PIXELS // max(1, batch.shape[1] * batch.shape[2]))
    maps = []
    for start in range(0, len(batch), rows):
        if cancel is not None and cancel.is_set():
            return None
        maps.append(
            predictor.grad_cam(batch[start : start + rows], target_class=target, normalize=False)
        )
    return np.concatenate(maps) if maps else np.zeros(batch.shape[:3], np.float32)


def gradcam_map(
    cams: np.ndarray,
    *,
    image: np.ndarray,
    model_input: np.ndarray,
    action: str,
    grid: ImageTiles | None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Turn raw Grad-CAM maps into one ``[0, 1]`` map over the picture it explains.

    Returns the picture, the map, and what the picture is (for the caption).
    """
    from breastpath.inference.tiles import stitch

    if grid is not None:
        heat, base, shown = stitch(cams, grid), image, "the whole image, tile by tile"
    elif action == "padded":
        height, width = image.shape[:2]
        heat, base, shown = cams[0][:height, :width], image, "the image"
    elif action == "resized":
        heat, base, shown = cams[0], model_input, "the model's input (image resized and cropped)"
    else:
        heat, base, shown = cams[0], image, "the image"
    peak = float(heat.max()) if heat.size else 0.0
    heat = heat / peak if peak > 0 else np.zeros_like(heat)
    return base, heat, shown


def render_explanation(
    *,
    image: np.ndarray,
    base: np.ndarray,
    heat: np.ndarray,
    shown: str,
    target: str,
    tiles: dict[str, Any] | None,
    grid: ImageTiles | None,
    stain: dict[str, Any],
    image_assessed: bool = True,
) -> dict[str, Any]:
    """The ``explain`` block of a response (PNG pictures as base64).

    The tile map greys out the tiles not assessed; all of them when the whole image is not
    (``image_assessed`` false: it failed the input-quality gate, so no tile is scored for its
    verdict either).
    """
    tiles_png = None
    if grid is not None and tiles is not None:
        scores = np.asarray(tiles["probabilities"], dtype=np.float64)
        scored = grid.assessed if image_assessed else np.zeros_like(grid.assessed)
        tiles_png = render.png_base64(render.tile_heatmap(image, scores, scored, grid.tile_size))
    evidence = bool(heat.size and float(heat.max()) > 0)
    return {
        "method": "grad-cam",
        "target_class": target,
        "explains": shown,
        "evidence": evidence,
        "note": None if evidence else f"no positive evidence for {target!r} anywhere in the image",
        "input_png": render.png_base64(render.for_display(image)),
        "gradcam_png": render.png_base64(render.overlay(base, heat)),
        "tiles_png": tiles_png,
        "stain": stain,
    }
