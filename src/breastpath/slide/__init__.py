"""Slide-level views: IDC tissue mosaics and whole-slide heatmaps.

Modules
-------
``mosaic``     IDC patches -> a patient's tissue image, ground truth and prediction side by side
``reader``     one reader API for pyramidal TIFF / OME-TIFF (tifffile) and OpenSlide formats
``tissue``     tissue mask on a low-resolution level (Otsu on saturation or optical density)
``tiling``     tile grid at the model's input size, lazy parallel reads, batched scoring
``heatmap``    slide score (top-k mean, the headline), heatmap PNG, tile CSV
``analyze``    the whole-slide pipeline behind ``breastpath slide``
``synthetic``  generated pyramidal TIFF slides for tests and benchmarks

Nothing is imported until used: ``from breastpath.slide import open_slide`` loads only the reader.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_slide": "reader",
    "SlideReader": "reader",
    "detect_tissue": "tissue",
    "tissue_mask": "tissue",
    "resolve_resolution": "tiling",
    "make_grid": "tiling",
    "score_grid": "tiling",
    "slide_score": "heatmap",
    "analyze_slide": "analyze",
    "load_patient": "mosaic",
    "build_mosaic": "mosaic",
    "write_mosaic": "mosaic",
    "write_synthetic_slide": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'breastpath.slide' has no attribute {name!r}")
    return getattr(importlib.import_module(f"breastpath.slide.{_EXPORTS[name]}"), name)
